"""Logs an SRE can join to traces: every record carries the trace and span ids of the current span and the
tenant, session and turn ids of the turn it belongs to, as JSON lines or as text.

The ids travel in a context variable set where turn spans start (:func:`log_context`, used by
:func:`salon.otel.server_span`, :func:`salon.otel.producer_span` and :func:`salon.otel.span`), so code that logs
needs no arguments for them. Content stays out unless the operator opted in (``capture_content``): the formatters
print an exception's type and frames but not its message (messages may quote user text or model output),
and :class:`ContentFilter` drops the model SDKs' debug logs, which print whole requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span

from salon.otel import attributes as attrs

FORMATS: Final = ("text", "json")
ID_FIELDS: Final = {attrs.TENANT_ID: "tenant_id", attrs.SESSION_ID: "session_id", attrs.TURN_ID: "turn_id"}
"""Span attributes that name a turn, and the log field each becomes."""
CONTENT_LOGGERS: Final = ("anthropic", "openai", "httpx", "httpx2", "httpcore", "llama_cpp")
"""Libraries whose DEBUG logs print request or response bodies (prompts, answers)."""
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class _Scope:
    """The turn ids of the code running now, and the span to name when none is current (a gateway call's
    SERVER span is deliberately never made current: see :class:`salon.otel.ServerSpan`)."""

    __slots__ = ("ids", "span")

    def __init__(self, ids: dict[str, str], span: Span | None) -> None:
        self.ids = ids
        self.span = span


_scope: ContextVar[_Scope | None] = ContextVar("salon_log_scope", default=None)


def ids_from_attributes(values: Mapping[str, Any] | None) -> dict[str, str]:
    """The log fields (``tenant_id``, ``session_id``, ``turn_id``) named by span attributes."""
    if not values:
        return {}
    return {field: str(values[key]) for key, field in ID_FIELDS.items() if values.get(key)}


@contextlib.contextmanager
def log_context(ids: Mapping[str, str] | None = None, *, span: Span | None = None) -> Iterator[None]:
    """Records logged inside the block carry ``ids`` (added to those of the enclosing block) and, when no
    span is current, the ids of ``span``."""
    if not ids and span is None:
        yield  # nothing to add: spans without turn ids (most) cost no context switch
        return
    outer = _scope.get()
    merged = dict(outer.ids) if outer is not None else {}
    merged.update(ids or {})
    token = _scope.set(_Scope(merged, span if span is not None else (outer.span if outer is not None else None)))
    try:
        yield
    finally:
        # A block left from another context (a generator closed elsewhere) cannot reset: its context dies anyway.
        with contextlib.suppress(ValueError):
            _scope.reset(token)


def annotate(ids: Mapping[str, str]) -> None:
    """Add ``ids`` to the innermost :func:`log_context` for the rest of its block (the gateway learns a
    turn's ids inside the call's block, after it started)."""
    scope = _scope.get()
    if scope is not None and ids:
        scope.ids.update(ids)


def current_ids() -> dict[str, str]:
    """The ids a record logged here would carry: ``trace_id``, ``span_id`` (of the current span, else of the
    enclosing call's) and the turn's ``tenant_id``, ``session_id``, ``turn_id`` when known."""
    scope = _scope.get()
    out: dict[str, str] = {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid and scope is not None and scope.span is not None:
        ctx = scope.span.get_span_context()
    if ctx.is_valid:
        out["trace_id"] = format(ctx.trace_id, "032x")
        out["span_id"] = format(ctx.span_id, "016x")
    if scope is not None:
        out.update(scope.ids)
    return out


def _capture_content() -> bool:
    from salon.otel.runtime import capture_content

    return capture_content()


def _safe_args(args: Any) -> Any:
    # An exception passed as an argument prints its message: keep its type only.
    if isinstance(args, tuple):
        return tuple(type(a).__qualname__ if isinstance(a, BaseException) else a for a in args)
    return args


def message_of(record: logging.LogRecord, *, content: bool) -> str:
    """The record's message; without ``content``, exceptions among its arguments become their type name."""
    if content or not record.args:
        return record.getMessage()
    safe = logging.makeLogRecord(record.__dict__)
    safe.args = _safe_args(record.args)
    return safe.getMessage()


def _type_name(te: traceback.TracebackException) -> str:
    exc_type = te.exc_type
    if exc_type is None:
        return "Exception"
    module = exc_type.__module__
    return exc_type.__qualname__ if module in ("builtins", "__main__") else f"{module}.{exc_type.__qualname__}"


def format_exception(exc_info: _ExcInfo, *, content: bool) -> str:
    """A traceback; without ``content``, each exception of the chain by type and frames only."""
    if exc_info[1] is None:
        return ""
    if content:
        return "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    chain: list[tuple[traceback.TracebackException, str]] = []
    te: traceback.TracebackException | None = traceback.TracebackException(*exc_info, capture_locals=False)
    link = ""
    while te is not None and len(chain) < 16:
        chain.append((te, link))
        if te.__cause__ is not None:
            te, link = te.__cause__, "The above exception was the direct cause of the following exception:"
        elif te.__context__ is not None and not te.__suppress_context__:
            te, link = te.__context__, "During handling of the above exception, another exception occurred:"
        else:
            te = None
    lines: list[str] = []
    for te, link in reversed(chain):
        lines += ["Traceback (most recent call last):\n", *te.stack.format(), f"{_type_name(te)} (message withheld)\n"]
        if link:
            lines.append(f"\n{link}\n\n")
    return "".join(lines).rstrip("\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the ids
    of :func:`current_ids`, ``process`` when named, and ``exception`` (type and traceback)."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        content = _capture_content()
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "timestamp": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message_of(record, content=content),
        }
        out.update(current_ids())
        if self._process:
            out["process"] = self._process
        if record.exc_info and record.exc_info[1] is not None:
            out["exception"] = {
                "type": type(record.exc_info[1]).__qualname__,
                "traceback": format_exception(record.exc_info, content=content),
            }
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the turn's ids appended and exception messages withheld unless
    content capture is on."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        content = _capture_content()
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = message_of(record, content=content), None
        safe.exc_info, safe.exc_text = None, None
        line = super().format(safe)
        ids = current_ids()
        if ids:
            line += " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]"
        if record.exc_info and record.exc_info[1] is not None:
            line += "\n" + format_exception(record.exc_info, content=content)
        return line


def formatter(fmt: str, process: str = "") -> logging.Formatter:
    """The formatter of a log format (``text`` or ``json``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return JsonFormatter(process) if fmt == "json" else TextFormatter()


class ContentFilter(logging.Filter):
    """Drops the model SDKs' and HTTP clients' DEBUG records (whole requests and responses: prompts,
    answers) unless content capture is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO or not record.name.startswith(CONTENT_LOGGERS):
            return True
        return _capture_content()


class _Handlers:
    stderr: logging.Handler | None = None
    file: logging.Handler | None = None


_handlers = _Handlers()


def _swap(old: logging.Handler | None, new: logging.Handler | None) -> None:
    root = logging.getLogger()
    if old is not None:
        root.removeHandler(old)
        old.close()
    if new is not None:
        root.addHandler(new)


def setup_logging(level: str = "INFO", fmt: str = "text", *, process: str = "") -> None:
    """Log this process's records at ``level`` and above to stderr as ``fmt`` (``text`` or ``json``),
    replacing the handler an earlier call installed (other handlers stay)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, process))
    handler.addFilter(ContentFilter())
    _swap(_handlers.stderr, handler)
    _handlers.stderr = handler
    logging.getLogger().setLevel(level.upper())


def log_to_file(directory: str, process: str) -> Path | None:
    """Also write this process's records as JSON lines to ``<directory>/<process>-<pid>.jsonl`` (replacing
    an earlier file); an empty ``directory`` stops writing one. Returns the file."""
    handler: logging.FileHandler | None = None
    path: Path | None = None
    if directory:
        path = Path(directory) / f"{process}-{os.getpid()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(JsonFormatter(process))
        handler.addFilter(ContentFilter())
    _swap(_handlers.file, handler)
    _handlers.file = handler
    return path
