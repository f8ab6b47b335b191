"""The README and docs as a new user reads them: their Python snippets run, and every
``omniseg`` command line they show is one the installed command accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    """``(doc name, code)`` of every fenced block in that language."""
    return [(doc.name, m.group(2)) for doc in DOCS for m in FENCE.finditer(doc.read_text())
            if m.group(1) == language]


def omniseg_lines() -> list[tuple[str, str]]:
    """Every complete ``omniseg`` command line of the docs (synopses with [...] excluded)."""
    out = []
    for doc, code in blocks("bash"):
        for line in code.splitlines():
            for part in line.split("&&"):
                words = part.split("#")[0].strip()
                if words.startswith("omniseg ") and "[" not in words:
                    out.append((doc, words))
    return out


@pytest.mark.parametrize("doc, code", blocks("python"), ids=lambda v: str(v)[:40])
def test_python_snippet_runs(doc, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"<{doc}>", "exec"), {})


@pytest.mark.parametrize("doc, line", omniseg_lines(), ids=lambda v: str(v)[:60])
def test_omniseg_command_line_is_accepted(doc, line):
    from napari_omniseg.cli import build_parser

    words = shlex.split(line.replace("$KI", "manifest.csv"))[1:]
    build_parser().parse_args(words)  # exits (fails the test) on an unknown or bad option


def test_the_docs_show_commands_and_snippets():
    assert len(omniseg_lines()) >= 10 and blocks("python")
