"""What a docstring says about a function used as a tool: its summary and each parameter's description, in
Google (``Args:``), NumPy (``Parameters`` underlined) or Sphinx (``:param name:``) style."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Docstring", "parse_docstring"]

_SECTION = re.compile(
    r"^(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|Raises|Examples?|Notes?|"
    r"See Also|Warnings?)\s*:?\s*$"
)
_UNDERLINE = re.compile(r"^-{3,}\s*$")
_GOOGLE_ARG = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\*{0,2}\w+)\s*(?::.*)?$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}


@dataclass
class Docstring:
    """A parsed docstring."""

    summary: str = ""
    """The text before the first section (``Args:``, ``Returns:`` …)."""
    params: dict[str, str] = field(default_factory=dict)
    """Each documented parameter's description, on one line."""


@dataclass
class _Parser:
    """Reads a docstring line by line; ``section`` is where it is: "" (the summary), "google", "numpy",
    "sphinx" (a parameter section of that style) or "other" (a section that describes no parameter)."""

    summary: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    section: str = ""
    current: str = ""
    current_indent: int = 0

    def feed(self, raw: str, following: str) -> bool:
        """Take one line (``following``: the next one, stripped); True when it consumed that one as well."""
        line = raw.strip()
        sphinx = _SPHINX_PARAM.match(line)
        if sphinx:
            self.section, self.current = "sphinx", sphinx.group(1)
            self.params[self.current] = sphinx.group(2).strip()
        elif line.startswith(":") and self.section == "sphinx":
            self.current = ""  # :returns:, :raises: …
        elif _SECTION.match(line) and (line.endswith(":") or _UNDERLINE.match(following)):
            return self._header(line, numpy_style=bool(_UNDERLINE.match(following)))
        elif not self.section:
            self.summary.append(line)
        elif line:
            self._body(raw, line)
        return False

    def _header(self, line: str, *, numpy_style: bool) -> bool:
        is_params = line.rstrip(":").strip().lower() in _PARAM_SECTIONS
        self.section = ("numpy" if numpy_style else "google") if is_params else "other"
        self.current = ""
        return numpy_style  # the header's underline is consumed with it

    def _body(self, raw: str, line: str) -> None:
        if self.section == "sphinx":
            if self.current:
                self.params[self.current] = f"{self.params[self.current]} {line}".strip()
            return
        if self.section not in ("google", "numpy"):
            return
        indent = len(raw) - len(raw.lstrip())
        if self.current and indent > self.current_indent:
            self.params[self.current] = f"{self.params[self.current]} {line}".strip()
            return
        match = (_GOOGLE_ARG if self.section == "google" else _NUMPY_ARG).match(line)
        if match:
            self.current, self.current_indent = match.group(1).lstrip("*"), indent
            self.params[self.current] = match.group(2).strip() if self.section == "google" else ""


def parse_docstring(doc: str) -> Docstring:
    """The summary and the parameter descriptions of ``doc`` (as :func:`inspect.getdoc` returns it)."""
    parser = _Parser()
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        i += 2 if parser.feed(lines[i], following) else 1
    summary = re.sub(r"\n{3,}", "\n\n", "\n".join(parser.summary).strip())
    return Docstring(summary, {k: v for k, v in parser.params.items() if v})
