"""Chunking: size bounds, nothing lost, overlap, natural boundaries, markdown headings."""

from __future__ import annotations

import itertools
import re

import pytest

from salon.storage.chunking import CHARS_PER_TOKEN, Chunk, chunk_text, estimate_tokens

PROSE = " ".join(
    f"Sentence {i} says that item {i} weighs {i * 3} grams and ships from warehouse {i % 7}." for i in range(120)
)


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcd" * 10) == 10


def test_chunks_fit_the_budget_and_none_is_empty() -> None:
    chunks = chunk_text(PROSE, chunk_tokens=50, overlap_tokens=10)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.strip() == chunk.text
        assert chunk.text
        assert len(chunk.text) <= 50 * CHARS_PER_TOKEN


def test_no_text_is_lost_and_order_is_kept() -> None:
    chunks = chunk_text(PROSE, chunk_tokens=50, overlap_tokens=10)
    covered: list[str] = []
    for chunk in chunks:
        chunk_words = words(chunk.text)
        # Skip the overlap: the part of this chunk that repeats the end of what is covered already.
        skip = next(
            (n for n in range(min(len(chunk_words), len(covered)), 0, -1) if covered[-n:] == chunk_words[:n]), 0
        )
        covered.extend(chunk_words[skip:])
    assert covered == words(PROSE)


def test_consecutive_chunks_overlap_by_whole_sentences_when_one_fits() -> None:
    # Sentences of PROSE are about 85 characters: an overlap of 25 tokens (100 characters) holds one.
    chunks = chunk_text(PROSE, chunk_tokens=60, overlap_tokens=25)
    for before, after in itertools.pairwise(chunks):
        first_sentence = re.match(r"Sentence \d+ [^.]*\.", after.text)
        assert first_sentence is not None, after.text[:40]
        assert before.text.endswith(first_sentence.group(0))
        # Chunks end at sentence ends, not mid-sentence.
        assert before.text.endswith(".")


def test_a_short_overlap_is_whole_words_from_the_end_of_the_previous_chunk() -> None:
    chunks = chunk_text(PROSE, chunk_tokens=50, overlap_tokens=10)
    for before, after in itertools.pairwise(chunks):
        head = after.text[:40]
        overlap = head[: head.rfind(" ")]
        assert overlap
        assert before.text.endswith(overlap)
        assert before.text[-len(overlap) - 1] == " "


def test_without_overlap_chunks_do_not_repeat() -> None:
    chunks = chunk_text(PROSE, chunk_tokens=50, overlap_tokens=0)
    assert sum(len(words(c.text)) for c in chunks) == len(words(PROSE))


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    first = "First paragraph. " * 8
    second = "Second paragraph here. " * 8
    chunks = chunk_text(f"{first.strip()}\n\n{second.strip()}", chunk_tokens=60, overlap_tokens=0)
    assert [c.text for c in chunks] == [first.strip(), second.strip()]
    small = chunk_text("One.\n\nTwo.\n\nThree.", chunk_tokens=60, overlap_tokens=0)
    assert [c.text for c in small] == ["One.\n\nTwo.\n\nThree."]


def test_a_word_longer_than_a_chunk_is_cut() -> None:
    chunks = chunk_text("x" * 1000, chunk_tokens=50, overlap_tokens=10)
    assert "".join(c.text for c in chunks) == "x" * 1000
    assert all(len(c.text) <= 200 for c in chunks)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, markdown=True) == []
    assert chunk_text(text) == []


def test_markdown_with_only_headings_gives_no_chunks() -> None:
    assert chunk_text("# Title\n\n## Sub  \n", markdown=True) == []


def test_markdown_headings_start_chunks_and_name_them() -> None:
    doc = "\n".join(
        [
            "Preface text.",
            "",
            "# Setup",
            "",
            "Install it.",
            "",
            "## Linux",
            "",
            "```sh",
            "# a comment in code, not a heading",
            "apt-get install salon",
            "```",
            "",
            "Then run it.",
            "",
            "# Usage ##",
            "",
            "Call it.",
        ]
    )
    chunks = chunk_text(doc, markdown=True, chunk_tokens=200, overlap_tokens=20)
    assert [c.heading for c in chunks] == ["", "Setup", "Setup / Linux", "Usage"]
    assert chunks[0].text == "Preface text."
    assert chunks[1].text == "Install it."
    assert "# a comment in code, not a heading" in chunks[2].text
    assert chunks[2].text.endswith("Then run it.")
    assert chunks[3] == Chunk("Call it.", "Usage")


def test_a_long_list_is_split_between_items_and_keeps_its_lines() -> None:
    items = [f"- item {i}: check the {i}th valve" for i in range(30)]
    chunks = chunk_text("\n".join(items), markdown=True, chunk_tokens=40, overlap_tokens=0)
    assert len(chunks) > 3
    for chunk in chunks:
        assert all(line in items for line in chunk.text.split("\n"))
    assert [line for c in chunks for line in c.text.split("\n")] == items


def test_plain_text_headings_are_just_text() -> None:
    chunks = chunk_text("# Not a heading\n\nbody", markdown=False)
    assert chunks == [Chunk("# Not a heading\n\nbody", "")]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_text("x", chunk_tokens=0)
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_text("x", overlap_tokens=-1)


def test_chunks_counted_with_a_tokenizer_never_exceed_its_count() -> None:
    def words(text: str) -> int:
        return len(text.split())

    text = "One two three. Four five six seven. Eight nine ten eleven twelve.\n\nThirteen fourteen. " * 20
    chunks = chunk_text(text, chunk_tokens=9, overlap_tokens=3, count_tokens=words)
    assert chunks and max(words(c.text) for c in chunks) <= 9
    assert " ".join(c.text for c in chunks).count("Thirteen") >= 20  # nothing lost (overlaps may repeat)


def test_the_models_own_tokenizer_keeps_every_chunk_within_its_input() -> None:
    from salon.storage.embedding import MAX_SEQUENCE_TOKENS, default_embedder

    model = default_embedder()
    # Text the characters / 4 estimate under-counts: short words, digits and punctuation.
    text = " ".join(f"v{i}.{i % 7}-x/{i}" for i in range(2000))
    estimated = chunk_text(text, chunk_tokens=200)
    assert max(model.count_tokens(c.text) for c in estimated) > MAX_SEQUENCE_TOKENS - 2  # cut by the model
    counted = chunk_text(text, chunk_tokens=200, count_tokens=model.count_tokens)
    assert max(model.count_tokens(c.text) for c in counted) <= 200
