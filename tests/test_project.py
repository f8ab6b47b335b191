"""Promises about the project itself: the README's commands, CI, and a light import."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "bash scripts/setup.sh && ruff check . && mypy && python -m pytest"
    assert test_cmd in readme and test_cmd in ci
    first_block = readme.split("```")[1]
    assert test_cmd in first_block  # the two set-up commands open the README


def test_importing_the_plugin_is_light():
    code = ("import sys, napari_omniseg, napari_omniseg._reader, napari_omniseg._sample_data;"
            "heavy = {'torch', 'napari', 'qtpy', 'skimage', 'nibabel'} & set(sys.modules);"
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
