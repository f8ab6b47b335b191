"""The installed ``omniseg`` command, run as a person runs it from a shell."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from napari_omniseg.cli import build_parser


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list:
    """Every command line that names a (sub-)command, from the parser itself."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_command_is_listed():
    assert ("segment",) in COMMANDS and ("train", "fetal") in COMMANDS and len(COMMANDS) > 10


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "omniseg")
def test_help_of_the_installed_command(words):
    exe = shutil.which("omniseg")
    assert exe, "the omniseg command is not installed (pip install -e .)"
    out = subprocess.run([exe, *words, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: omniseg" + "".join(f" {w}" for w in words))
    assert out.stderr == ""
    if not words:  # the top level lists every sub-command
        for name in ("simulate", "train", "segment", "segment-volume", "finetune", "evaluate",
                     "info"):
            assert f"    {name}" in out.stdout
