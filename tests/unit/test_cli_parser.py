"""The `salon` command line explains itself: every command has a description, every option a help text, and
`salon --help` loads none of the engine's heavy dependencies."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from salon.engine.cli_parser import add_credential_arguments, build_parser

COMMANDS = (
    "serve",
    "demo",
    "chat",
    "export",
    "trace",
    "config",
    "usage",
    "ingest",
    "keys",
    "token",
    "reembed",
    "hosts",
)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    found = {"salon": build_parser()}
    pending = list(found.items())
    while pending:
        name, parser = pending.pop()
        for sub_name, sub in _subcommands(parser).items():
            found[f"{name} {sub_name}"] = sub
            pending.append((f"{name} {sub_name}", sub))
    return found


def test_every_command_is_there() -> None:
    assert set(_subcommands(build_parser())) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(_all_parsers()))
def test_every_command_has_a_description_and_every_option_a_help_text(name: str) -> None:
    parser = _all_parsers()[name]
    assert parser.description and len(parser.description) > 40, f"`{name} --help` has no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        assert action.help, f"`{name}`: {'/'.join(action.option_strings) or action.dest} has no help text"


def test_every_command_has_a_summary_in_the_list() -> None:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            assert set(summaries) == set(COMMANDS)
            assert all(summaries.values())


def test_trace_help_says_it_needs_telemetry_on() -> None:
    parser = _all_parsers()["salon trace"]
    assert "SALON_TELEMETRY=jsonl" in (parser.description or "")
    assert "SALON_TELEMETRY=jsonl" in parser.format_help()


def test_credential_options_are_the_client_packages() -> None:
    from salon.client.chat import add_credential_arguments as client_arguments

    def options(add: object) -> list[tuple[tuple[str, ...], str, object]]:
        parser = argparse.ArgumentParser()
        add(parser)  # type: ignore[operator]
        return [(tuple(a.option_strings), a.dest, a.default) for a in parser._actions if a.dest != "help"]

    assert options(add_credential_arguments) == options(client_arguments)


def test_help_loads_no_heavy_dependency() -> None:
    probe = (
        "import sys, json, contextlib, io\n"
        "from engine.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(result.stdout))
    assert not loaded & {"grpc", "ray", "nats", "lancedb", "pyarrow", "onnxruntime", "rich", "storage", "actors"}
