"""The fault suite's answers: which full generation a stored text came from is what tells a restart from the
start (nothing of the earlier generation was stored) from progress thrown away."""

from __future__ import annotations

from bench.faults.model import answer_tokens, variants_in


def test_the_generation_of_stored_text_is_read_back_from_its_words() -> None:
    first = "".join(answer_tokens("t:a", 0, 6))
    third = "".join(answer_tokens("t:a", 2, 6, big=True))
    assert variants_in(first) == {0}
    assert variants_in(third) == {2}
    # A stored answer that began as one generation and went on as another names both.
    assert variants_in(first[:12] + third) == {0, 2}
    assert variants_in("") == set()
    assert variants_in("a reply that is no generation's") == set()
