"""Which files `salon ingest` takes from a folder: not hidden, vendored or git-ignored ones, unless asked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from salon.engine.ingest import FileFilter, collect_files


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"text of {name}\n")


def _taken(root: Path, file_filter: FileFilter | None = None) -> list[str]:
    collected = collect_files([str(root)], file_filter)
    return [found.path.relative_to(root).as_posix() for found in collected.found]


def test_hidden_and_vendored_files_are_skipped(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        [
            "README.md",
            "guides/setup.md",
            "notes.txt",
            ".hidden.md",
            ".github/CONTRIBUTING.md",
            "node_modules/pkg/README.md",
            ".venv/lib/x.md",
            "venv/lib/x.md",
            "src/__pycache__/x.md",
            "src/salon.egg-info/PKG-INFO.txt",
            "lib/site-packages/pkg/README.md",
            "dist/README.md",
            "build/notes.md",
            "image.png",
        ],
    )
    collected = collect_files([str(tmp_path)], FileFilter(use_git=False))
    # In name order, folders walked in place.
    assert [f.path.relative_to(tmp_path).as_posix() for f in collected.found] == [
        "README.md",
        "guides/setup.md",
        "notes.txt",
    ]
    # .hidden.md; .github, node_modules, .venv, venv, __pycache__, *.egg-info, site-packages, dist, build
    assert (collected.skipped, collected.skipped_dirs) == (1, 9)


def test_include_takes_skipped_files_back_and_exclude_wins(tmp_path: Path) -> None:
    _tree(tmp_path, ["README.md", ".github/CONTRIBUTING.md", "node_modules/pkg/README.md", "drafts/idea.md"])
    taken = _taken(tmp_path, FileFilter(include=(".github/*.md",), exclude=("drafts",), use_git=False))
    assert sorted(taken) == [".github/CONTRIBUTING.md", "README.md"]
    taken = _taken(tmp_path, FileFilter(include=("**/*.md",), exclude=("node_modules",), use_git=False))
    assert sorted(taken) == [".github/CONTRIBUTING.md", "README.md", "drafts/idea.md"]
    assert sorted(_taken(tmp_path, FileFilter(exclude=("*.md",), use_git=False))) == []


def test_a_file_named_directly_is_taken(tmp_path: Path) -> None:
    _tree(tmp_path, [".hidden.md"])
    collected = collect_files([str(tmp_path / ".hidden.md")])
    assert [f.path.name for f in collected.found] == [".hidden.md"]
    assert collected.found[0].problem == ""


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_ignored_files_are_skipped_inside_a_work_tree(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("generated/\nsecret-*.md\n")
    _tree(tmp_path, ["README.md", "generated/api.md", "secret-plans.md", "docs/guide.md"])
    assert sorted(_taken(tmp_path)) == ["README.md", "docs/guide.md"]
    # Walking a subfolder of the work tree still honours the repository's rules.
    assert _taken(tmp_path / "docs") == ["guide.md"]
    # --include takes an ignored file back; git is not asked about it.
    assert "secret-plans.md" in _taken(tmp_path, FileFilter(include=("secret-*.md",)))
    # Without git's help (or outside a work tree) nothing is git-ignored.
    assert "secret-plans.md" in _taken(tmp_path, FileFilter(use_git=False))


def test_html_pdf_and_docx_files_are_taken_with_their_media_types(tmp_path: Path) -> None:
    _tree(tmp_path, ["page.html", "manual.pdf", "handbook.docx", "photo.png", "notes.md"])
    collected = collect_files([str(tmp_path)])
    taken = {found.path.name: found.media_type for found in collected.found}
    assert taken == {
        "handbook.docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "manual.pdf": "application/pdf",
        "notes.md": "text/markdown",
        "page.html": "text/html",
    }
    (png,) = collect_files([str(tmp_path / "photo.png")]).found
    assert png.problem.startswith("not a file of a known type")
