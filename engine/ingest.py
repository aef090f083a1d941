"""``salon ingest``: send text and markdown files to a running engine's knowledge base, with a progress bar
and a readable account of what failed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from salon.client import Document, SalonClient, SalonError

SUFFIXES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
MAX_SEND_BYTES = 4 * 1024 * 1024 - 64 * 1024
"""A file larger than this cannot travel in one gRPC message; it is reported here instead of sent."""
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def document_id_for(path: Path, root: Path) -> str:
    """A document id from a file's path under ``root`` (``guides/setup.md`` → ``guides-setup-md``): stable, so
    ingesting the same tree again replaces its documents. Long paths keep their end and a hash."""
    relative = path.relative_to(root) if path != root else Path(path.name)
    ident = _ID_UNSAFE.sub("-", relative.as_posix()).strip("-") or "document"
    if len(ident) > 64:
        digest = hashlib.blake2b(relative.as_posix().encode(), digest_size=6).hexdigest()
        ident = f"{ident[-51:].lstrip('-')}-{digest}"
    return ident


@dataclass(frozen=True, slots=True)
class Found:
    """A file to send, or one that cannot be (``problem`` says why)."""

    path: Path
    document_id: str
    media_type: str
    problem: str = ""


def find_files(paths: Sequence[str]) -> Iterator[Found]:
    """The .txt and .md files among ``paths`` (directories are walked, in name order)."""
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            for path in files:
                yield Found(path, document_id_for(path, root), SUFFIXES[path.suffix.lower()])
        elif root.is_file():
            media = SUFFIXES.get(root.suffix.lower(), "")
            problem = "" if media else "not a .txt or .md file"
            yield Found(root, document_id_for(root, root.parent), media, problem)
        else:
            yield Found(root, "", "", "no such file or directory")


def _read(found: Found) -> tuple[Document | None, str]:
    try:
        if found.path.stat().st_size > MAX_SEND_BYTES:
            return None, "too large to send"
        text = found.path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or type(exc).__name__})"
    title = found.path.stem.replace("_", " ").replace("-", " ")
    return Document(found.document_id, text, title=title, media_type=found.media_type), ""


async def ingest_paths(
    target: str, paths: Sequence[str], console: Console, *, batch: int = 8, credentials: Mapping[str, Any] | None = None
) -> int:
    """Ingest every file under ``paths`` into the engine at ``target``; 0 when all were stored, 1 when some
    failed, 2 when the engine could not be reached. ``credentials``: :class:`SalonClient` keyword arguments
    (API key, TLS files)."""
    failures: list[tuple[str, str, str]] = []
    documents: list[Document] = []
    sources: list[Path] = []
    for found in find_files(paths):
        doc, problem = (None, found.problem) if found.problem else _read(found)
        if doc is None:
            failures.append((str(found.path), "NOT_SENT", problem))
        else:
            documents.append(doc)
            sources.append(found.path)
    stored = chunks = 0
    if documents:
        columns = (
            TextColumn("[bold]ingesting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks"),
            TimeElapsedColumn(),
        )
        try:
            async with SalonClient(target, **(credentials or {})) as client:
                with Progress(*columns, console=console, transient=False) as bar:
                    task = bar.add_task("ingest", total=len(documents), chunks=0)
                    async for progress in client.ingest(documents, batch=batch):
                        result = progress.result
                        if result is None:
                            continue
                        bar.update(task, completed=result.documents_done, chunks=result.chunks_done)
                        if result.code == 0:
                            stored += 1
                            chunks += result.chunks
                        else:
                            failures.append((str(sources[result.index]), result.reason, result.message))
        except SalonError as exc:
            why = f"{exc.code.name}" + (f", {exc.reason}" if exc.reason else "")
            console.print(f"[red]salon ingest: the call to {target} failed ({why}): {exc.message}[/]")
            return 2
    console.print(f"stored {stored} document(s), {chunks} chunk(s)")
    if failures:
        table = Table(title=f"{len(failures)} file(s) not stored")
        for column in ("file", "reason", "why"):
            table.add_column(column)
        for row in failures:
            table.add_row(*row)
        console.print(table)
        return 1
    return 0
