"""Model providers: implementations of :class:`actors.ModelProvider` and the factory that picks one."""

from engine.providers.factory import ProviderSpec, build_provider
from engine.providers.offline import OfflineProvider
from engine.providers.scripted import ScriptedProvider, scripted_reply

__all__ = ["OfflineProvider", "ProviderSpec", "ScriptedProvider", "build_provider", "scripted_reply"]
