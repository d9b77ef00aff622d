"""The linters pass: ruff (pycodestyle, pyflakes, import order, pyupgrade, bugbear) on the package, the
tests and the benchmarks, and mypy on the package, both as pyproject.toml configures them.

CI runs only pytest (`.ci/run`), so they run here, as subprocesses from the repository's root, with the
interpreter running the tests (the `test` extra installs both). Neither needs the network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_passes() -> None:
    r = _run("ruff", "check", "harvester", "tests", "bench", "--output-format", "concise", "--no-cache")
    assert r.returncode == 0, f"ruff check harvester tests bench failed:\n{r.stdout}{r.stderr}"


def test_mypy_passes() -> None:
    r = _run("mypy")   # files, plugins and the strict modules: [tool.mypy] in pyproject.toml
    assert r.returncode == 0, f"mypy failed:\n{r.stdout}{r.stderr}"
