"""Notebook-test fixtures: a kernelspec that runs *this* interpreter, and a wall-time report.

The kernel must be the venv's Python (the one running pytest), whatever kernelspecs the machine has
installed: a temporary kernelspec named ``python3`` whose argv starts with ``sys.executable`` is written
for the session, and only that directory is searched. Nothing has to be installed by hand.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: notebook name -> seconds to execute it (filled by the tests, printed at the end of the run).
WALL_TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kernelspec directory holding one kernel, ``python3``, that runs ``sys.executable``."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (pruneviz tests)",
        "language": "python",
        # the debugger's "frozen modules" warning on stderr is noise in a headless run
        "env": {"PYDEVD_DISABLE_FILE_VALIDATION": "1"},
    }))
    yield root


@pytest.fixture
def wall_times() -> dict[str, float]:
    return WALL_TIMES


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest hook
    if not WALL_TIMES:
        return
    terminalreporter.section("notebook wall times")
    for name, seconds in sorted(WALL_TIMES.items()):
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
    terminalreporter.write_line(f"{sum(WALL_TIMES.values()):7.1f} s  total")
