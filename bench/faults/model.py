"""The model behind the engine under test: a protocol-speaking Anthropic server that counts what it generates.

Every turn the clients send carries a tag (``[t:...]``) in its text. The server answers a tag deterministically,
token by token with a pause between tokens, so faults land mid-stream. A request that ends with an assistant
prefill (the engine continuing an answer an earlier attempt began) gets the rest of the answer the prefill
starts. A request without a prefill for a tag already answered gets a *different* answer, as a sampling model
would: a second full generation then shows as text that contradicts what a client may have seen.

Counted per tag at the server (a killed engine process cannot lose these): requests, generations from the
start (no prefill) and among them those after an earlier request had streamed the whole answer (a second full
generation), continuations, and tokens written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from salon.providers.fake_servers import FakeAnthropicServer, Recorded, Reply

TAG = re.compile(r"\[(t:[A-Za-z0-9:_-]+)\]")
"""A turn's tag, at the start of its text (a summary's prompt quotes earlier turns' texts further in)."""
BIG = "[big]"
"""In a turn's text: answer with large tokens (a slow reader's HTTP/2 window fills up)."""
BIG_TOKEN_CHARS = 8000
"""With 24 tokens, three times a 64 KiB stream window."""


def answer_tokens(tag: str, variant: int, tokens: int, big: bool = False) -> list[str]:
    """The answer to ``tag``'s ``variant``-th full generation, as tokens (each but the first starts with a
    space, so a prefix of whole tokens never ends in whitespace, which the engine would trim off a prefill)."""
    pad = "x" * BIG_TOKEN_CHARS if big else ""
    words = [f"g{variant}w{i}{pad}" for i in range(tokens)]
    return [words[0], *(f" {w}" for w in words[1:])]


_WORD = re.compile(r"g(\d+)w\d+")


def variants_in(text: str) -> set[int]:
    """The full generations (see :func:`answer_tokens`) whose words appear in ``text``."""
    return {int(v) for v in _WORD.findall(text)}


@dataclass
class TagCount:
    """What the server generated for one tag."""

    requests: int = 0
    full: int = 0
    """Requests without a prefill: generations from the start of the answer."""
    second_full: int = 0
    """Requests without a prefill made after an earlier request for the turn had streamed its whole answer (the
    model's side: whether any of it was stored, the suite judges from the stored events)."""
    continuations: int = 0
    contradicted: int = 0
    """Continuations whose prefill matched no answer the server gave (text nobody generated)."""
    records: list[Recorded] = field(default_factory=list)

    @property
    def tokens_sent(self) -> int:
        """Tokens written for this tag over every request."""
        return sum(r.tokens_sent for r in self.records)


class CountingModel:
    """A :class:`FakeAnthropicServer` answering tagged turns. Lifecycle: ``start``/``close``."""

    def __init__(self, tokens: int, token_delay_s: float) -> None:
        self.tokens = tokens
        self.token_delay_s = token_delay_s
        self.server = FakeAnthropicServer(default=self._reply)
        self.tags: dict[str, TagCount] = {}
        self.untagged = 0

    async def start(self) -> str:
        """Listen on loopback; returns the base URL for ``SALON_ANTHROPIC_BASE_URL``."""
        return await self.server.start()

    async def close(self) -> None:
        """Stop listening."""
        await self.server.close()

    def count(self, tag: str) -> TagCount:
        """What was generated for ``tag`` so far (zeroes if nothing)."""
        return self.tags.get(tag) or TagCount()

    def _reply(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        text = _text(user.get("content")) if user is not None else ""
        found = TAG.match(text.lstrip())
        if found is None:
            self.untagged += 1
            return Reply(tokens=["ok"])
        tag = found.group(1)
        big = BIG in text
        count = self.tags.setdefault(tag, TagCount())
        count.requests += 1
        count.records.append(self.server.requests[-1])
        last = messages[-1] if messages else {}
        prefill = _text(last.get("content")) if last.get("role") == "assistant" else ""
        if not prefill:
            count.full += 1
            count.second_full += any(r.finished for r in count.records[:-1])
            tokens = answer_tokens(tag, count.full - 1, self.tokens, big)
        else:
            count.continuations += 1
            tokens = self._rest(count, tag, prefill, big)
        return Reply(tokens=tokens, token_delay_s=self.token_delay_s, input_tokens=20, output_tokens=len(tokens))

    def _rest(self, count: TagCount, tag: str, prefill: str, big: bool) -> list[str]:
        """The tokens after ``prefill`` of the answer it begins."""
        for variant in range(max(count.full, 1)):
            tokens = answer_tokens(tag, variant, self.tokens, big)
            sent = ""
            for index, token in enumerate(tokens):
                if sent == prefill:
                    return tokens[index:]
                sent += token
            if sent == prefill:
                return []
        count.contradicted += 1
        return answer_tokens(tag, 99, self.tokens, big)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""
