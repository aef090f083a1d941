"""The async Python client of Salon.

``SalonClient`` holds the channel; ``Session`` objects send turns; a turn is an async iterator of
``salon.v1.TurnEvent``. Failed calls raise :class:`SalonError` carrying the gRPC status and Salon's reason.
"""

from salon.client.client import Reply, SalonClient, Session
from salon.client.errors import SalonError

__all__ = ["Reply", "SalonClient", "SalonError", "Session"]
