"""``salon demo``: a short conversation on a few sessions at once, streamed to the terminal, answered with
the help of a small knowledge base (the turns cite the passages they retrieved)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from salon.client import Document, SalonClient, SalonError, Session

DOCUMENTS = [
    Document(
        "lisbon-guide",
        "# Lisbon in May\n\nDays are mild, 17 to 24 °C, with cool evenings by the river: pack layers, a light "
        "jacket and shoes for steep cobbled hills. Sintra, 40 minutes by train, makes the classic day trip.",
        title="Lisbon guide",
        media_type="text/markdown",
    ),
    Document(
        "quick-dinners",
        "A spinach and feta omelette takes about 15 minutes: wilt the spinach, whisk the eggs, fold in the "
        "crumbled feta and cook gently.",
        title="Quick dinners",
    ),
    Document(
        "bike-faq",
        "Rear brakes often squeak after rain because wet pads and rims or rotors squeal. Usually harmless, but "
        "braking is weaker when wet: ride slower and have the pads checked if the noise stays when dry.",
        title="Bike shop FAQ",
    ),
]

SCRIPT: list[tuple[str, str, list[str]]] = [
    (
        "travel",
        "You help people plan trips.",
        ["I want to visit Lisbon in May. What should I pack?", "And what about a day trip from there?"],
    ),
    (
        "cooking",
        "You are a patient cooking coach.",
        ["I have eggs, spinach and feta. Dinner idea?", "How long does that take?"],
    ),
    (
        "support",
        "You are a support agent for a bike shop.",
        ["My rear brake squeaks after rain.", "Is it safe to ride like that?"],
    ),
]


@dataclass
class TurnLog:
    """What the demo shows of one turn."""

    session: str
    question: str
    answer: list[str] = field(default_factory=list)
    ttft_ms: float | None = None
    sources: list[str] = field(default_factory=list)
    total_ms: float | None = None
    outcome: str = "waiting"


async def _run_session(client: SalonClient, label: str, system: str, questions: list[str], logs: list[TurnLog]) -> None:
    session: Session = await client.create_session(system_prompt=system, metadata={"demo": label})
    for question in questions:
        log = TurnLog(label, question)
        logs.append(log)
        start = time.perf_counter()
        try:
            async for event in session.send(question):
                kind = event.WhichOneof("kind")
                if kind == "citations":
                    log.sources = [f"{c.title or c.document_id} ({c.score:.2f})" for c in event.citations.citations]
                elif kind == "delta":
                    if log.ttft_ms is None:
                        log.ttft_ms = (time.perf_counter() - start) * 1000
                    log.answer.append(event.delta.text)
                elif kind in ("completed", "error", "cancelled"):
                    log.outcome = kind
        except SalonError as exc:
            log.outcome = f"failed: {exc.code.name}"
        log.total_ms = (time.perf_counter() - start) * 1000


def _finished_turn(log: TurnLog) -> Text:
    """A whole turn, printed once it is over: the question, the passages it cited, the answer, its timing."""
    label = f"[{log.session}] "
    text = Text()
    text.append(f"{label}you> {log.question}\n", style="bold")
    if log.sources:
        text.append(f"{label}cited: " + "; ".join(log.sources) + "\n", style="cyan")
    text.append(f"{label}salon> ", style="bold green")
    text.append("".join(log.answer).strip() + "\n")
    timing = []
    if log.ttft_ms is not None:
        timing.append(f"first token {log.ttft_ms:.0f} ms")
    if log.total_ms is not None:
        timing.append(f"whole answer {log.total_ms:.0f} ms")
    if log.outcome != "completed":
        timing.append(f"ended: {log.outcome}")
    text.append(f"{label}({', '.join(timing)})\n", style="dim")
    return text


def _streaming(logs: list[TurnLog], width: int) -> Group:
    """One line per session whose answer is streaming now: the answer's latest words."""
    lines = []
    for log in logs:
        if log.total_ms is not None:
            continue
        prefix = f"[{log.session}] salon> "
        answer = " ".join("".join(log.answer).split())
        room = max(width - len(prefix) - 1, 10)
        shown = answer if len(answer) <= room else "…" + answer[-(room - 1) :]
        line = Text(prefix, style="bold green")
        line.append(shown or "…", style="dim" if not answer else "")
        lines.append(line)
    return Group(*lines)


def _summary(logs: list[TurnLog]) -> Table:
    table = Table(title="turns")
    for column in ("session", "turn", "first token (ms)", "turn (ms)", "tokens", "outcome"):
        table.add_column(column)
    for label, _, _ in SCRIPT:
        for n, log in enumerate((entry for entry in logs if entry.session == label), 1):
            table.add_row(
                label,
                str(n),
                f"{log.ttft_ms:.1f}" if log.ttft_ms is not None else "-",
                f"{log.total_ms:.0f}" if log.total_ms is not None else "-",
                str(len(log.answer)),
                log.outcome,
            )
    return table


async def run_demo(target: str, console: Console) -> bool:
    """Run the scripted conversation against ``target``; True when every turn completed.

    The three sessions run at once. Each turn is printed whole when it is over, so answers never interleave;
    on a terminal, one line per session meanwhile shows its answer streaming in."""
    logs: list[TurnLog] = []
    async with SalonClient(target) as client:
        await client.wait_ready()
        stored = [p async for p in client.ingest(DOCUMENTS) if p.result is not None and p.result.code == 0]
        console.print(f"knowledge base: {len(stored)} documents ingested")
        tasks = [asyncio.create_task(_run_session(client, *entry, logs)) for entry in SCRIPT]
        printed: set[int] = set()
        live = (
            Live(_streaming(logs, console.width), console=console, refresh_per_second=12, transient=True)
            if console.is_terminal
            else None
        )
        with live or contextlib.nullcontext():
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=1 / 12)
                _print_finished(logs, printed, console)
                if live is not None:
                    live.update(_streaming(logs, console.width))
        _print_finished(logs, printed, console)
        await asyncio.gather(*tasks)
    console.print(_summary(logs))
    return all(log.outcome == "completed" for log in logs)


def _print_finished(logs: list[TurnLog], printed: set[int], console: Console) -> None:
    for index, log in enumerate(logs):
        if index not in printed and log.total_ms is not None:
            console.print(_finished_turn(log), highlight=False)
            printed.add(index)
