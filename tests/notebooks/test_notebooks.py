"""Execute every notebook in notebooks/ top to bottom in a real kernel (nbclient) and fail on any error.

Each notebook runs in a fresh kernel of this interpreter (see conftest.py), with its own folder as the
working directory, a per-cell timeout, and its wall time recorded (printed at the end of the run). Beyond
"no exception", the widgets' own error areas (where lesson callbacks put errors instead of raising) must
be empty, and every lesson must show its literature card.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
LESSONS = [n for n in ALL if n[:2].isdigit()]
CELL_TIMEOUT = 300  # seconds per cell: generous; whole lessons take seconds
#: the issue's budget for one lesson (CI runs all six)
LESSON_BUDGET = 60.0

pytestmark = pytest.mark.slow


def _client(nb: nbformat.NotebookNode, kernel_dir: Path) -> NotebookClient:
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    return NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}}, store_widget_state=True,
    )


def execute(name: str, kernel_dir: Path) -> tuple[nbformat.NotebookNode, float]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    t0 = time.perf_counter()
    _client(nb, kernel_dir).execute()
    return nb, time.perf_counter() - t0


def widget_errors(nb: nbformat.NotebookNode) -> list[str]:
    """Non-empty values of the lessons' (and the app's) error areas, from the stored widget state."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    out = []
    for model in state.values():
        s = model.get("state", {})
        classes = s.get("_dom_classes", [])
        if any(c in ("pv-lesson-error", "pv-app-error") for c in classes) and s.get("value"):
            out.append(s["value"])
    return out


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            parts.append(str(data.get("text/html", "")) + str(data.get("text/plain", "")) + str(o.get("text", "")))
    return "\n".join(parts)


def test_there_are_seven_lessons():
    assert len(LESSONS) == 7, LESSONS
    assert LESSONS[0] == "01_what_is_pruning.ipynb" and LESSONS[-1] == "07_heterogeneous_data.ipynb"


def test_kernel_is_this_interpreter(kernel_dir, tmp_path):
    """The kernel the notebooks run in is the venv's Python, not whatever `python` is on PATH."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import sys, pruneviz\nprint(sys.executable)\nprint(pruneviz.__file__)"))
    _client(nb, kernel_dir).execute()
    exe, pkg = nb.cells[0].outputs[0]["text"].split()
    assert Path(exe).resolve() == Path(sys.executable).resolve()
    assert Path(pkg).resolve().is_relative_to(ROOT)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", LESSONS)
def test_lesson_notebook_runs(name, kernel_dir, wall_times):
    nb, seconds = execute(name, kernel_dir)
    wall_times[name] = seconds
    print(f"{name}: {seconds:.1f} s")
    assert not widget_errors(nb), widget_errors(nb)
    text = outputs_text(nb)
    assert "From the literature" in text, "the lesson's finding card was not displayed"
    assert "Traceback" not in text
    stderr = [o["text"] for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr  # e.g. "Out of range float values are not JSON compliant" (NaN sent to the page)
    assert seconds < 3 * LESSON_BUDGET, f"{name} took {seconds:.0f} s (budget {LESSON_BUDGET:.0f} s)"


@pytest.mark.timeout(900)
def test_dashboard_notebook_runs(kernel_dir, wall_times):
    name = "dashboard.ipynb"
    try:
        nb, seconds = execute(name, kernel_dir)
    except CellExecutionError as e:
        if "pruneviz.widgets.explorer" in str(e) and "ModuleNotFoundError" in str(e):
            pytest.xfail("the explorer widget (pruneviz.widgets.explorer) is not there yet")
        raise
    wall_times[name] = seconds
    print(f"{name}: {seconds:.1f} s")
    assert not widget_errors(nb), widget_errors(nb)
    stderr = [o["text"] for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr  # e.g. torch's "No CUDA runtime is found" when the latency module is imported
