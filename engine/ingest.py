"""``salon ingest``: send text, markdown, HTML, PDF and DOCX files to a running engine's knowledge base, with a
progress bar and a readable account of what failed."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from salon.client import Document, SalonClient, SalonError
from salon.client.knowledge import MEDIA_TYPES

SUFFIXES = MEDIA_TYPES
"""The files taken, by suffix, and their media types."""
_BINARY = frozenset({".pdf", ".docx"})
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


VENDORED_DIRS: frozenset[str] = frozenset(
    {"node_modules", ".venv", "venv", "__pycache__", "site-packages", "dist", "build"}
)
"""Folders of other people's files (dependencies, build output): skipped when a folder is walked."""
VENDORED_SUFFIXES: tuple[str, ...] = (".egg-info",)


@dataclass(frozen=True, slots=True)
class FileFilter:
    """Which files of a walked folder are taken.

    Skipped by default: hidden files and folders (a name starting with a dot), vendored folders
    (:data:`VENDORED_DIRS`, ``*.egg-info``) and, inside a git work tree, the files git ignores. ``include``
    patterns take back skipped files; ``exclude`` patterns skip more, and win over ``include``. A pattern
    with a ``/`` is matched against the path under the walked folder (``guides/*.md``, ``**/*.md``); one
    without is matched against each part of it (``drafts``, ``*.txt``). A file named on the command line is
    always taken."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    use_git: bool = True


def _matches(relative: PurePosixPath, pattern: str) -> bool:
    if "/" not in pattern:
        return any(fnmatch.fnmatchcase(part, pattern) for part in relative.parts)
    path = relative.as_posix()
    return fnmatch.fnmatchcase(path, pattern) or (pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:]))


def skipped_by_default(relative: PurePosixPath) -> bool:
    """Whether a file at ``relative`` (under the walked folder) is hidden or vendored."""
    return any(
        part.startswith(".") or part in VENDORED_DIRS or part.endswith(VENDORED_SUFFIXES) for part in relative.parts
    )


def git_ignored(root: Path, relatives: Sequence[PurePosixPath]) -> set[PurePosixPath]:
    """The paths among ``relatives`` (under ``root``) that git ignores; empty when ``root`` is not in a git work
    tree or git is not installed."""
    if not relatives:
        return set()
    try:
        inside = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            check=False,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return set()
        listed = subprocess.run(
            ["git", "-C", str(root), "check-ignore", "--stdin", "-z"],
            input="\0".join(p.as_posix() for p in relatives).encode(),
            capture_output=True,
            check=False,
        )
    except OSError:  # no git
        return set()
    # Exit status 0: some paths are ignored, 1: none; anything else is an error (then nothing is skipped).
    if listed.returncode not in (0, 1):
        return set()
    return {PurePosixPath(raw) for raw in listed.stdout.decode().split("\0") if raw}


@dataclass(slots=True)
class Collected:
    """The files to ingest and how many a walk skipped."""

    found: list[Found] = field(default_factory=list)
    skipped: int = 0
    """Files left out (hidden, vendored, git-ignored or excluded)."""
    skipped_dirs: int = 0
    """Hidden and vendored folders not walked at all."""


def _walk(root: Path, file_filter: FileFilter, collected: Collected) -> list[PurePosixPath]:
    """The files of a known type (:data:`SUFFIXES`) under ``root`` that ``file_filter`` takes, in name order;
    counts what it skips."""
    taken: list[PurePosixPath] = []
    candidates: list[PurePosixPath] = []
    for directory, dirs, files in os.walk(root):
        base = PurePosixPath(Path(directory).relative_to(root).as_posix())
        if not file_filter.include:
            # Nothing can take these back: do not even walk them (node_modules can be large).
            kept = [d for d in dirs if not skipped_by_default(PurePosixPath(d))]
            collected.skipped_dirs += len(dirs) - len(kept)
            dirs[:] = kept
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() not in SUFFIXES:
                continue
            relative = base / name if base.parts else PurePosixPath(name)
            if any(_matches(relative, pattern) for pattern in file_filter.exclude):
                collected.skipped += 1
            elif any(_matches(relative, pattern) for pattern in file_filter.include):
                taken.append(relative)
            elif skipped_by_default(relative):
                collected.skipped += 1
            else:
                candidates.append(relative)
    ignored = git_ignored(root, candidates) if file_filter.use_git else set()
    collected.skipped += len(ignored)
    taken.extend(p for p in candidates if p not in ignored)
    return sorted(taken, key=lambda p: p.parts)


def collect_files(paths: Sequence[str], file_filter: FileFilter | None = None) -> Collected:
    """The files of a known type among ``paths``: directories are walked in name order through ``file_filter``
    (default: :class:`FileFilter`); a file named directly is always taken."""
    file_filter = file_filter or FileFilter()
    collected = Collected()
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            for relative in _walk(root, file_filter, collected):
                path = root / relative
                collected.found.append(Found(path, document_id_for(path, root), SUFFIXES[path.suffix.lower()]))
        elif root.is_file():
            media = SUFFIXES.get(root.suffix.lower(), "")
            problem = "" if media else f"not a file of a known type ({', '.join(sorted(SUFFIXES))})"
            collected.found.append(Found(root, document_id_for(root, root.parent), media, problem))
        else:
            collected.found.append(Found(root, "", "", "no such file or directory"))
    return collected


def _read(found: Found, collection: str = "") -> tuple[Document | None, str]:
    try:
        if found.path.stat().st_size > MAX_SEND_BYTES:
            return None, "too large to send"
        binary = found.path.suffix.lower() in _BINARY
        content = found.path.read_bytes() if binary else b""
        text = "" if binary else found.path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or type(exc).__name__})"
    title = found.path.stem.replace("_", " ").replace("-", " ")
    document = Document(
        found.document_id, text, title=title, media_type=found.media_type, content=content, collection=collection
    )
    return document, ""


async def ingest_paths(
    target: str,
    paths: Sequence[str],
    console: Console,
    *,
    batch: int = 8,
    credentials: Mapping[str, Any] | None = None,
    file_filter: FileFilter | None = None,
    collection: str = "",
) -> int:
    """Ingest every file under ``paths`` (walked through ``file_filter``) into the engine at ``target``; 0 when
    all were stored, 1 when some failed, 2 when the engine could not be reached. ``credentials``:
    :class:`SalonClient` keyword arguments (API key, TLS files); ``collection``: the knowledge collection the
    documents go into (empty: none)."""
    failures: list[tuple[str, str, str]] = []
    documents: list[Document] = []
    sources: list[Path] = []
    collected = collect_files(paths, file_filter)
    if collected.skipped or collected.skipped_dirs:
        console.print(
            f"skipped {collected.skipped} file(s) and {collected.skipped_dirs} folder(s): hidden, vendored, "
            "git-ignored or excluded (--include takes files back)"
        )
    for found in collected.found:
        doc, problem = (None, found.problem) if found.problem else _read(found, collection)
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
