"""Periods named in a question ("last May", "in March 2026" ...), and how they pick the memories of that time."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from salon.storage.lance.memories import memory_text, memory_words
from salon.storage.lance.retrieval import period_filter
from salon.storage.periods import Period, find_period
from salon.storage.records import TurnRecord
from salon.storage.retrieval import MEMORY, Candidate, Passage, fuse, memory_date, pool_bm25

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("What did Maya do last May?", date(2025, 5, 1), date(2025, 5, 31)),
        ("what happened in May 2024", date(2024, 5, 1), date(2024, 5, 31)),
        ("anything from last March?", date(2025, 3, 1), date(2025, 3, 31)),
        ("this March", date(2026, 3, 1), date(2026, 3, 31)),
        ("in February", date(2026, 2, 1), date(2026, 2, 28)),
        ("the trip in Sept 2024", date(2024, 9, 1), date(2024, 9, 30)),
        ("on 2026-02-14", date(2026, 2, 14), date(2026, 2, 14)),
        ("yesterday", date(2026, 3, 9), date(2026, 3, 9)),
        ("last week", date(2026, 3, 2), date(2026, 3, 8)),
        ("last month", date(2026, 2, 1), date(2026, 2, 28)),
        ("what did we say in 2025", date(2025, 1, 1), date(2025, 12, 31)),
    ],
)
def test_a_named_period_is_found_counting_from_now(text: str, first: date, last: date) -> None:
    assert find_period(text, NOW) == Period(first, last)


@pytest.mark.parametrize(
    "text", ["May I ask you something?", "Jan said hi", "we march on", "how are you", "on 2026-02-30", "room 2025"]
)
def test_no_period_is_found_where_none_is_named(text: str) -> None:
    assert find_period(text, NOW) is None


@pytest.mark.parametrize(
    ("text", "rest"),
    [
        ("What did Maya do last May?", "What did Maya do ?"),
        ("what happened in May 2024 at work", "what happened at work"),
        ("notes from 2026-02-14 please", "notes from please"),
        ("what did Sam say last week", "what did Sam say"),
    ],
)
def test_the_words_naming_a_period_are_left_out_of_the_lexical_query(text: str, rest: str) -> None:
    period = find_period(text, NOW)
    assert period is not None
    assert " ".join(period.strip(text).split()) == rest


def test_a_period_becomes_date_prefixes_that_cover_it_exactly() -> None:
    assert Period(date(2025, 1, 1), date(2025, 12, 31)).prefixes() == ["2025"]
    assert Period(date(2025, 5, 1), date(2025, 5, 31)).prefixes() == ["2025-05"]
    assert Period(date(2025, 5, 30), date(2025, 6, 30)).prefixes() == ["2025-05-30", "2025-05-31", "2025-06"]
    assert period_filter(Period(date(2025, 5, 1), date(2025, 5, 31))) == "(text LIKE '[2025-05%')"


def test_a_memory_carries_its_date_and_speaker_but_embeds_its_words_alone() -> None:
    turn = TurnRecord(
        tenant_id="acme",
        session_id="s1",
        turn_id="t1",
        incarnation="i",
        turn_index=1,
        status="completed",
        user_text="I adopted a dog.",
        reply_text="Congratulations!",
        completed_at_ns=int(datetime(2026, 5, 14, 9, 30, tzinfo=UTC).timestamp() * 1e9),
    )
    text = memory_text(turn)
    assert text == "[2026-05-14] user: I adopted a dog.\nassistant: Congratulations!"
    assert memory_text(turn, speaker="maya").startswith("[2026-05-14] maya: ")
    assert memory_words(turn) == "I adopted a dog.\nCongratulations!"
    assert memory_date(Passage(MEMORY, "s1", "t1", text, 0.0, 1)) == date(2026, 5, 14)
    undated = TurnRecord("acme", "s1", "t2", "i", 2, "completed", "hello", "")
    assert memory_text(undated) == "user: hello"


def test_pool_bm25_weighs_a_word_most_candidates_share_little() -> None:
    texts = ["maya: good night", "maya: traffic was bad", "maya: we adopted a beagle", "jon: a beagle? cute"]
    scores = pool_bm25("What pet did Maya adopt, a beagle?", texts)
    assert scores.index(max(scores)) == 2
    assert scores[3] > scores[0]  # "beagle" (rare here) counts for more than "maya" (in most of them)
    assert pool_bm25("the of and", texts) == [0.0] * 4


def test_fusion_lifts_the_memories_of_the_period_asked_about() -> None:
    may = Passage(MEMORY, "s", "may", "[2025-05-03] maya: nothing much", 0.0, 1)
    june = Passage(MEMORY, "s", "june", "[2025-06-03] maya: nothing much at all", 0.0, 1)
    candidates = [Candidate(june, 0.5), Candidate(may, 0.4)]
    assert [p.chunk_id for p in fuse(candidates, query_text="what did maya do")] == ["june", "may"]
    period = Period(date(2025, 5, 1), date(2025, 5, 31))
    fused = fuse(candidates, query_text="what did maya do in May 2025", period=period)
    assert [p.chunk_id for p in fused] == ["may", "june"]
    assert all(0.0 <= p.score <= 1.0 for p in fused)
