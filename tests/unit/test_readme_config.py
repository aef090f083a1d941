"""The README's configuration table is the code's: regenerate it with `salon config --markdown`."""

from __future__ import annotations

from pathlib import Path

from salon.engine.config import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_table_matches_the_settings() -> None:
    text = README.read_text()
    start = text.index("<!-- config-table")
    table = text[text.index("\n", start) + 1 : text.index("<!-- /config-table -->")]
    assert table == markdown_table(), "README config table is stale: run `salon config --markdown`"
