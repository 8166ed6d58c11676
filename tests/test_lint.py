"""The tree passes ruff (pyproject.toml [tool.ruff]): pyflakes, pycodestyle and import order."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO, VENV_BIN


def test_ruff_finds_nothing():
    proc = subprocess.run([str(VENV_BIN / "ruff"), "check", "--output-format", "concise", "pet_fairseq", "tests"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
