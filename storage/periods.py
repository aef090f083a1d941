"""The period of time a question is about ("last May", "in March 2026", "last week", "on 2026-05-14"), found
in its text, so memory retrieval can look among the turns of that period (memories are indexed with their
date first, see :func:`salon.storage.lance.memories.memory_text`).

English only, and only explicit forms: a month name with a year or after "last", "this", "in", "of" or
"during" (a bare "May" or "Jan" is too often a verb or a name), a year after "in", "of" or "during", an ISO
date, "yesterday", "last week", "last month", "last year", "this month", "this year". A text naming
none has no period, and retrieval goes on as without.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Final

MONTHS: Final = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Period:
    """Days ``first`` to ``last``, both included (UTC dates)."""

    first: date
    last: date
    span: tuple[int, int] = field(default=(0, 0), compare=False)
    """Where the question names the period (start and end offsets in its text; (0, 0) when unknown)."""

    def strip(self, text: str) -> str:
        """``text`` without the words that name the period: the period is matched on dates, so these words
        only add noise to lexical matching ("may" the verb, the year in every dated memory)."""
        start, end = self.span
        return f"{text[:start]} {text[end:]}" if end > start else text

    def contains(self, day: date) -> bool:
        """Whether ``day`` falls in the period."""
        return self.first <= day <= self.last

    def prefixes(self) -> list[str]:
        """Date prefixes (``YYYY-MM-DD``, ``YYYY-MM`` or ``YYYY``) whose days cover exactly the period: whole
        years, then whole months, then days (at most a few dozen for any period this module finds)."""
        out: list[str] = []
        day = self.first
        while day <= self.last:
            year_end = date(day.year, 12, 31)
            month_end = _month_end(day.year, day.month)
            if day.month == 1 and day.day == 1 and year_end <= self.last:
                out.append(f"{day.year:04d}")
                day = year_end + timedelta(days=1)
            elif day.day == 1 and month_end <= self.last:
                out.append(f"{day.year:04d}-{day.month:02d}")
                day = month_end + timedelta(days=1)
            else:
                out.append(day.isoformat())
                day += timedelta(days=1)
        return out


_MONTH: Final = "|".join(MONTHS) + "|" + "|".join(m[:3] for m in MONTHS if len(m) > 3) + "|sept"
_ISO: Final = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_YEAR: Final = re.compile(
    rf"\b(last\s+|this\s+|in\s+|of\s+|during\s+)?({_MONTH})\.?(?:\s*,?\s*(\d{{4}}))?\b", re.I
)
_YEAR: Final = re.compile(r"\b(?:in|during|of)\s+((?:19|20)\d{2})\b", re.I)
_RELATIVE: Final = re.compile(r"\b(yesterday|last\s+week|last\s+month|last\s+year|this\s+month|this\s+year)\b", re.I)


def find_period(text: str, now: datetime) -> Period | None:
    """The period ``text`` asks about, counted from ``now``; None if it names none."""
    today = now.astimezone(UTC).date()
    if match := _ISO.search(text):
        try:
            day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            day = None
        if day is not None:
            return Period(day, day, match.span())
    if match := _RELATIVE.search(text):
        return replace(_relative(" ".join(match.group(1).lower().split()), today), span=match.span())
    for match in _MONTH_YEAR.finditer(text):
        word, name = (match.group(1) or "").strip().lower(), match.group(2).lower()
        if not word and not match.group(3):
            continue  # a bare "may", "march" or "Jan" is more often a verb or a name than a month
        month = next(i for i, m in enumerate(MONTHS, 1) if m.startswith(name[:3]))
        if match.group(3):
            year = int(match.group(3))
        elif word == "this":
            year = today.year
        else:
            # "last May" or "in May": the latest May before this month ("in May" may be this month too).
            year = today.year if month < today.month or (month == today.month and word != "last") else today.year - 1
        return Period(date(year, month, 1), _month_end(year, month), match.span())
    if match := _YEAR.search(text):
        year = int(match.group(1))
        return Period(date(year, 1, 1), date(year, 12, 31), match.span())
    return None


def _relative(phrase: str, today: date) -> Period:
    if phrase == "yesterday":
        day = today - timedelta(days=1)
        return Period(day, day)
    if phrase == "last week":
        monday = today - timedelta(days=today.weekday())
        return Period(monday - timedelta(days=7), monday - timedelta(days=1))
    if phrase == "last month":
        last = date(today.year, today.month, 1) - timedelta(days=1)
        return Period(date(last.year, last.month, 1), last)
    if phrase == "this month":
        return Period(date(today.year, today.month, 1), today)
    if phrase == "last year":
        return Period(date(today.year - 1, 1, 1), date(today.year - 1, 12, 31))
    return Period(date(today.year, 1, 1), today)  # this year


def _month_end(year: int, month: int) -> date:
    return (date(year + month // 12, month % 12 + 1, 1)) - timedelta(days=1)
