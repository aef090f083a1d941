"""Benchmark of issue 8's cost on the first token: authentication and guardrails on vs off.

Three whole engines (gRPC gateway, JetStream bus, Ray session hosts, ledger, LanceDB writer, scripted provider
with ``--tokens`` tokens and no delays) share one nats-server and one Ray, each in its own namespace:

* ``plain``: auth off, the caller's tenant has every guardrail off.
* ``guards``: auth off, the tenant has the default guardrails (injection flagging, redaction of secrets and
  personal data, canary, input character checks).
* ``auth``: auth on (an API key in ``authorization: Bearer``), two tenants: ``auth`` has every guardrail off,
  ``auth+guards`` has the defaults.

That gives four variants. Each round runs ``--turns`` sequential turns of each variant on one session per
variant, in an order rotated every round so that drift over time hits every variant alike (interleaved).
Per turn: time to first token (SendTurn sent → first delta received) and turn latency. The report gives the
medians over all rounds, the ratio of each variant's median to ``plain``, and the per-round medians (their
spread shows how far the machine let the comparison be resolved).

The message is ordinary prose with numbers and an e-mail address, so the redactor holds back and redacts
as it would on real answers; nothing in it looks like an injection.

Also measured in-process: the CPU cost of the output guard alone per answer (``--tokens`` deltas).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import load_average, percentile, positive_int
from salon.actors.events import TurnEvent
from salon.actors.guardrails import Guardrails, GuardrailSettings, OutputGuard, new_canary
from salon.actors.session import LocalInFlight, SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.actors.wire import event_to_proto
from salon.engine.app import Engine
from salon.engine.config import Config
from salon.engine.nats_server import EmbeddedNats
from salon.engine.tenants import key_entry_toml, new_key
from salon.providers import scripted_reply
from salon.providers.scripted import ScriptedProvider
from salon.storage.inmemory import InMemoryJournal
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

log = logging.getLogger("bench.security")

VARIANTS = ("plain", "guards", "auth", "auth+guards")
MESSAGE = "Meet me at 10:30 in room 204, bring the 2024 report and write to ops@example.com about the 3 open items"
GUARDS_OFF = (
    'injection = "off"\nredact_secrets = false\nredact_pii = false\ncanary = false\n'
    "block_control_chars = false\nblock_bidi = false\n"
)


@dataclass
class Variant:
    """One way of calling: an engine, a session on it and the call's credentials."""

    name: str
    stub: cs_grpc.ConversationServiceStub
    metadata: tuple[tuple[str, str], ...] = ()
    session_id: str = ""
    ttft_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    """Median TTFT of each round."""
    errors: int = 0


def _tenants_file(path: Path, *, auth: bool) -> dict[str, str]:
    """Write a tenants file; returns each variant's API key (empty without auth)."""
    if not auth:
        path.write_text("[tenants.default]\nkeys = []\n[tenants.default.guardrails]\n" + GUARDS_OFF)
        return {}
    keys: dict[str, str] = {}
    lines: list[str] = []
    for tenant, variant, guards in (("plain_t", "auth", GUARDS_OFF), ("guard_t", "auth+guards", "")):
        key, key_id, digest = new_key()
        keys[variant] = key
        lines += [f"[tenants.{tenant}]", "keys = [", f"  {key_entry_toml(tenant, key_id, digest)}", "]"]
        if guards:
            lines += [f"[tenants.{tenant}.guardrails]", guards]
    path.write_text("\n".join(lines) + "\n")
    return keys


@contextlib.asynccontextmanager
async def engines(root: Path, tokens: int) -> AsyncIterator[dict[str, Engine | dict[str, str]]]:
    """The three engines on one nats-server; closed in reverse order."""
    nats = EmbeddedNats(root / "nats")
    url = await nats.start()
    started: list[Engine] = []
    try:
        common: dict[str, Any] = {
            "grpc_port": 0,
            "nats_url": url,
            "num_hosts": 1,
            "num_shards": 2,
            "model_provider": "scripted",
            "scripted_tokens": tokens,
            "shutdown_grace_s": 2.0,
        }
        plain_file, auth_file = root / "plain.toml", root / "auth.toml"
        _tenants_file(plain_file, auth=False)
        keys = _tenants_file(auth_file, auth=True)
        configs = {
            "plain": Config(data_dir=str(root / "plain"), namespace="bp", tenants_file=str(plain_file), **common),
            "guards": Config(data_dir=str(root / "guards"), namespace="bg", **common),
            "auth": Config(
                data_dir=str(root / "auth"), namespace="ba", tenants_file=str(auth_file), auth="on", **common
            ),
        }
        built: dict[str, Engine | dict[str, str]] = {"keys": keys}
        for name, config in configs.items():
            engine = Engine(config)
            started.append(engine)
            await engine.start()
            built[name] = engine
        yield built
    finally:
        for engine in reversed(started):
            with contextlib.suppress(Exception):
                await engine.close()
        await nats.close()


async def _turn(variant: Variant) -> None:
    request = cs_pb2.SendTurnRequest(session_id=variant.session_id, text=MESSAGE)
    start = time.perf_counter()
    first = 0.0
    ok = False
    try:
        async for response in variant.stub.SendTurn(request, metadata=variant.metadata):
            kind = response.event.WhichOneof("kind")
            if kind == "delta" and not first:
                first = time.perf_counter()
            ok = kind == "completed"
    except grpc.aio.AioRpcError as exc:
        log.warning("turn of %s failed: %s", variant.name, exc.code())
    end = time.perf_counter()
    if not ok or not first:
        variant.errors += 1
        return
    variant.ttft_ms.append((first - start) * 1e3)
    variant.turn_ms.append((end - start) * 1e3)


def guard_cost_us(tokens: int, repeats: int = 2000) -> dict[str, float]:
    """CPU time (best of 5 batches) of the output guard over one answer of ``tokens`` deltas, in µs per answer
    and per delta, and of the input checks (characters and injection) on the message."""
    deltas = scripted_reply(MESSAGE, tokens)
    canary = new_canary()
    settings = GuardrailSettings()
    guards = Guardrails(settings, canary=canary)
    best = best_input = float("inf")
    batch = repeats // 5
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            guard = OutputGuard(settings, canary)
            for delta in deltas:
                guard.feed(delta)
            guard.finish()
        best = min(best, (time.perf_counter() - start) / batch)
        start = time.perf_counter()
        for _ in range(batch):
            guards.check_input(MESSAGE, "text")
            guards.check_user_text(MESSAGE)
        best_input = min(best_input, (time.perf_counter() - start) / batch)
    return {"per_answer_us": best * 1e6, "per_delta_us": best * 1e6 / tokens, "input_us": best_input * 1e6}


async def actor_ttft_us(blocks: int = 20, per_block: int = 50) -> dict[str, float]:
    """The bare session actor (in-memory journal, no bus): submit → first delta, guardrails on vs off, in
    alternating blocks; p50 in µs. Isolates the guardrails' own cost from the machine's noise."""
    journal = InMemoryJournal()
    off = GuardrailSettings(
        injection="off",
        redact_secrets=False,
        redact_pii=False,
        canary=False,
        block_control_chars=False,
        block_bidi=False,
    )
    settings = {"on": GuardrailSettings(), "off": off}
    samples: dict[str, list[float]] = {"on": [], "off": []}
    actors: dict[str, SessionActor] = {}
    for name in samples:
        loaded, ledger = await journal.open("bench", name, "1", "bench-host")
        state = SessionState.restore(loaded, "1", 4)
        session = SessionSettings(system_prompt="You are concise.", window_max_messages=4)
        actors[name] = SessionActor(SessionKey("bench", name), session, state, ScriptedProvider(tokens=64), ledger)
    loop = asyncio.get_running_loop()
    try:
        for block in range(blocks):
            for name in ("on", "off") if block % 2 else ("off", "on"):
                for i in range(per_block):
                    first: asyncio.Future[float] = loop.create_future()
                    done: asyncio.Future[None] = loop.create_future()

                    async def sink(event: TurnEvent, first: asyncio.Future[float] = first) -> None:
                        # Converted as the host does before publishing.
                        if event_to_proto(event).HasField("delta") and not first.done():
                            first.set_result(time.perf_counter())

                    async def on_done(done: asyncio.Future[None] = done) -> None:
                        done.set_result(None)

                    start = time.perf_counter()
                    turn = Turn(f"{block}-{i}", MESSAGE, guardrails=settings[name])
                    await actors[name].submit(LocalInFlight(turn, sink, on_done))
                    samples[name].append((await first - start) * 1e6)
                    await done
    finally:
        for actor in actors.values():
            await actor.close()
    return {name: statistics.median(values) for name, values in samples.items()}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the rounds; the results as a JSON-ready dict."""
    with tempfile.TemporaryDirectory(prefix="salon-bench-sec-") as tmp:
        async with engines(Path(tmp), args.tokens) as built:
            keys = built["keys"]
            assert isinstance(keys, dict)
            channels: list[grpc.aio.Channel] = []
            variants: list[Variant] = []
            for name in VARIANTS:
                engine = built["auth" if name.startswith("auth") else name]
                assert isinstance(engine, Engine)
                channel = grpc.aio.insecure_channel(engine.target)
                channels.append(channel)
                metadata = (("authorization", f"Bearer {keys[name]}"),) if name in keys else ()
                variant = Variant(name, cs_grpc.ConversationServiceStub(channel), metadata)  # type: ignore[no-untyped-call]
                created = await variant.stub.CreateSession(
                    cs_pb2.CreateSessionRequest(system_prompt="You are concise."), metadata=metadata
                )
                variant.session_id = created.session.session_id
                variants.append(variant)
            try:
                for variant in variants:  # warm-up: activation, first JetStream fetches, code paths
                    for _ in range(args.warmup):
                        await _turn(variant)
                    variant.ttft_ms.clear()
                    variant.turn_ms.clear()
                    variant.errors = 0
                for round_no in range(args.rounds):
                    shift = round_no % len(variants)
                    for variant in variants[shift:] + variants[:shift]:
                        before = len(variant.ttft_ms)
                        for _ in range(args.turns):
                            await _turn(variant)
                        variant.rounds.append(statistics.median(variant.ttft_ms[before:] or [float("nan")]))
            finally:
                for channel in channels:
                    await channel.close()
    plain = statistics.median(variants[0].ttft_ms)
    plain_turn = statistics.median(variants[0].turn_ms)
    by_name = {v.name: v for v in variants}

    def paired(name: str, base: str) -> float:
        """Median over rounds of the round's ratio: drift between rounds cancels out."""
        pairs = zip(by_name[name].rounds, by_name[base].rounds, strict=True)
        return statistics.median(a / b for a, b in pairs)

    return {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "turns_per_round": args.turns,
        "load_average": load_average(),
        "guard_cost": guard_cost_us(args.tokens),
        "actor_ttft_us": await actor_ttft_us(),
        "variants": [
            {
                "name": v.name,
                "turns": len(v.ttft_ms),
                "errors": v.errors,
                "ttft_p50_ms": statistics.median(v.ttft_ms),
                "ttft_p99_ms": percentile(v.ttft_ms, 99),
                "turn_p50_ms": statistics.median(v.turn_ms),
                "ttft_ratio": statistics.median(v.ttft_ms) / plain,
                "turn_ratio": statistics.median(v.turn_ms) / plain_turn,
                "round_p50s_ms": v.rounds,
                "paired_ratio": paired(v.name, "plain"),
            }
            for v in variants
        ],
        # The cleanest view of the guardrails alone: two tenants of the same engine, guardrails off and on.
        "guards_same_engine_ratio": paired("auth+guards", "auth"),
        "guards_same_engine_pooled_ratio": statistics.median(by_name["auth+guards"].ttft_ms)
        / statistics.median(by_name["auth"].ttft_ms),
    }


def render(out: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"{out['rounds']} rounds x {out['turns_per_round']} turns per variant, {out['tokens']} tokens, "
        f"load average at the end {out['load_average']}.",
        "",
        "| variant | turns | errors | TTFT p50 ms | TTFT p99 ms | turn p50 ms | **TTFT p50 vs plain** "
        "| per-round TTFT ratio (median) | turn p50 vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in out["variants"]:
        lines.append(
            f"| {v['name']} | {v['turns']} | {v['errors']} | {v['ttft_p50_ms']:.2f} | {v['ttft_p99_ms']:.2f} | "
            f"{v['turn_p50_ms']:.2f} | **{v['ttft_ratio']:.2f}x** | {v['paired_ratio']:.2f}x | {v['turn_ratio']:.2f}x |"
        )
    lines += ["", "TTFT p50 per round, ms:", ""]
    for v in out["variants"]:
        lines.append(f"- {v['name']}: " + ", ".join(f"{x:.2f}" for x in v["round_p50s_ms"]))
    cost = out["guard_cost"]
    actor = out["actor_ttft_us"]
    lines += [
        "",
        f"Bare session actor, submit → first delta p50: {actor['off']:.0f} µs with guardrails off, "
        f"{actor['on']:.0f} µs on (+{actor['on'] - actor['off']:.0f} µs).",
        "",
        f"Guardrails alone, same engine (tenant auth+guards vs tenant auth): pooled TTFT p50 ratio "
        f"{out['guards_same_engine_pooled_ratio']:.2f}x, median per-round ratio "
        f"{out['guards_same_engine_ratio']:.2f}x.",
        "",
        f"Output guard alone (redaction + canary), in-process: {cost['per_answer_us']:.1f} µs per "
        f"{out['tokens']}-delta answer, {cost['per_delta_us']:.2f} µs per delta; input checks (characters and "
        f"injection) on the message: {cost['input_us']:.1f} µs.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=positive_int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--rounds", type=positive_int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--turns", type=positive_int, default=25, help="turns per variant per round (default 25)")
    parser.add_argument("--warmup", type=positive_int, default=5, help="unmeasured turns per variant (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    out = asyncio.run(bench(args))
    print(render(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 1 if any(v["errors"] for v in out["variants"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
