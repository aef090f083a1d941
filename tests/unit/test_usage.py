"""A turn's usage converted between its shapes: record, model result, API message, token counts."""

from __future__ import annotations

import dataclasses

from salon.actors.model import ModelResult
from salon.actors.usage import record_usage, result_usage, token_counts, total_tokens
from salon.actors.wire import usage_to_proto
from salon.engine.convert import record_to_proto
from salon.storage import TurnRecord

RESULT = ModelResult(
    input_tokens=11,
    output_tokens=7,
    cache_read_input_tokens=5,
    cache_creation_input_tokens=3,
    provider="anthropic",
    model="claude-x",
    estimated_cost_usd=0.25,
)


def _record(result: ModelResult) -> TurnRecord:
    return TurnRecord(
        tenant_id="t",
        session_id="s",
        turn_id="u",
        incarnation="i",
        turn_index=1,
        status="completed",
        user_text="hi",
        reply_text="hello",
        **record_usage(result),
    )


def test_a_result_survives_the_record() -> None:
    assert result_usage(_record(RESULT)) == RESULT


def test_every_usage_field_of_a_result_reaches_the_record() -> None:
    names = {f.name for f in dataclasses.fields(ModelResult)} - {"stop_reason", "stop_sequence", "extra"}
    assert set(record_usage(RESULT)) == names


def test_the_api_message_carries_every_figure() -> None:
    usage = usage_to_proto(RESULT)
    assert (usage.input_tokens, usage.output_tokens) == (11, 7)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (5, 3)
    assert (usage.provider, usage.model, usage.estimated_cost_usd) == ("anthropic", "claude-x", 0.25)


def test_a_transcript_row_shows_the_same_usage_as_the_event() -> None:
    assert record_to_proto(_record(RESULT)).usage == usage_to_proto(RESULT)


def test_token_counts_by_metric_type_and_in_total() -> None:
    usage = usage_to_proto(RESULT)
    assert token_counts(usage) == {"input": 11, "output": 7, "cache_read": 5, "cache_write": 3}
    assert total_tokens(usage) == 26
