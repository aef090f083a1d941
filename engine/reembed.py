"""``salon reembed``: re-embed the data directory's memories and knowledge chunks with the configured model,
with a progress bar (the work is :func:`salon.storage.lance.reembed.reembed`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from salon.storage.embedding import build_embedder
from salon.storage.lance.reembed import reembed

if TYPE_CHECKING:
    from rich.console import Console

    from salon.engine.config import Config


async def reembed_with_progress(config: Config, console: Console, *, everything: bool = False) -> int:
    """Re-embed the rows of another model (``everything``: every row), one progress bar per table; 0."""
    embedder = await asyncio.to_thread(build_embedder, config.embedding_model)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        count = await reembed(
            config.lancedb_location,
            embedder,
            everything=everything,
            progress=advance,
            storage_options=config.lancedb_storage_options(),
        )
    console.print(f"re-embedded {count} rows with {embedder.model_id}")
    return 0
