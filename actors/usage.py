"""What a turn consumed, in each of the shapes it takes, each conversion written once.

The model's answer ends with a :class:`~salon.actors.model.ModelResult`; the turn's :class:`~salon.storage.TurnRecord`
keeps its usage fields; the API shows them as a ``turn_pb2.Usage`` (built at the edge,
:func:`salon.actors.wire.usage_to_proto`); the gateway's metrics and a tenant's token budget read token counts off any
of them.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

from salon.actors.model import ModelResult
from salon.storage import TurnRecord


class TokenUsage(Protocol):
    """Anything that counts a turn's tokens by type: a :class:`ModelResult`, a record, the API's ``Usage``."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_input_tokens(self) -> int: ...
    @property
    def cache_creation_input_tokens(self) -> int: ...


class UsageFields(TypedDict):
    """The usage fields a :class:`~salon.storage.TurnRecord` and a :class:`ModelResult` share."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    provider: str
    model: str
    estimated_cost_usd: float


def record_usage(result: ModelResult) -> UsageFields:
    """Result -> record: the fields of a turn's record that carry ``result``'s usage
    (``TurnRecord(**record_usage(result), ...)``)."""
    return UsageFields(
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cache_read_input_tokens=result.cache_read_input_tokens,
        cache_creation_input_tokens=result.cache_creation_input_tokens,
        provider=result.provider,
        model=result.model,
        estimated_cost_usd=result.estimated_cost_usd,
    )


def result_usage(record: TurnRecord) -> ModelResult:
    """Record -> result: the usage a recorded turn reported (its stop reason is not part of it)."""
    return ModelResult(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_read_input_tokens=record.cache_read_input_tokens,
        cache_creation_input_tokens=record.cache_creation_input_tokens,
        provider=record.provider,
        model=record.model,
        estimated_cost_usd=record.estimated_cost_usd,
    )


def token_counts(usage: TokenUsage) -> dict[str, int]:
    """The API's ``Usage`` -> tokens by type, as metrics label them (``input``, ``output``, ``cache_read``,
    ``cache_write``)."""
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_input_tokens,
        "cache_write": usage.cache_creation_input_tokens,
    }


def total_tokens(usage: TokenUsage) -> int:
    """Every token of ``usage``, cached ones included (what a tenant's daily budget counts)."""
    return sum(token_counts(usage).values())
