"""Estimated cost of a turn from a price table in config.

The table is one string, so it fits an environment variable: ``model=input/output/cache_read/cache_write``
entries in USD per million tokens, separated by ``;`` (the cache prices may be left out: they default to
0.1× and 1.25× the input price, Anthropic's 5-minute cache rates). A model matches the entry whose name is
the longest prefix of it, so ``claude-sonnet-4-5`` also prices ``claude-sonnet-4-5-20250929``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PRICES = (
    "claude-opus-4-5=5/25/0.5/6.25; claude-opus-4-1=15/75/1.5/18.75; claude-opus-4=15/75/1.5/18.75; "
    "claude-sonnet-4=3/15/0.3/3.75; claude-3-7-sonnet=3/15/0.3/3.75; "
    "claude-haiku-4-5=1/5/0.1/1.25; claude-3-5-haiku=0.8/4/0.08/1; claude-3-haiku=0.25/1.25/0.03/0.3"
)
"""Anthropic's published list prices (USD per million tokens) when this was written; override in config."""

_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int) -> float:
        """The cost in USD of a call with these token counts."""
        return (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * self.cache_read
            + cache_write_tokens * self.cache_write
        ) / _MTOK


class PriceTable:
    """Prices per model name prefix; models it does not know cost 0 (reported as "unknown")."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        # Longest prefix first, so the most specific entry wins.
        self._prices = dict(sorted((prices or {}).items(), key=lambda item: -len(item[0])))

    @classmethod
    def parse(cls, text: str) -> PriceTable:
        """Read the config string; raise ``ValueError`` naming the entry that is malformed."""
        prices: dict[str, Price] = {}
        for raw in text.split(";"):
            entry = raw.strip()
            if not entry:
                continue
            name, sep, numbers = entry.partition("=")
            parts = numbers.split("/")
            if not sep or not name.strip() or not 2 <= len(parts) <= 4:
                raise ValueError(f"price entry {entry!r} is not model=input/output[/cache_read/cache_write]")
            try:
                values = [float(p) for p in parts]
            except ValueError:
                raise ValueError(f"price entry {entry!r} has a price that is not a number") from None
            if any(v < 0 for v in values):
                raise ValueError(f"price entry {entry!r} has a negative price")
            inp, out = values[0], values[1]
            read = values[2] if len(values) > 2 else inp * 0.1
            write = values[3] if len(values) > 3 else inp * 1.25
            prices[name.strip()] = Price(inp, out, read, write)
        return cls(prices)

    def price(self, model: str) -> Price | None:
        """The entry for ``model``, or None."""
        for prefix, price in self._prices.items():
            if model.startswith(prefix):
                return price
        return None

    def cost(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        """Estimated USD cost of a call to ``model``; 0 when the model has no price."""
        price = self.price(model)
        if price is None:
            return 0.0
        return price.cost(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
