"""Write a notebook from a list of ("md" | "code", source) cells: keeps committed notebooks clean and thin.

    python scripts/make_notebook.py  # rewrites notebooks/dashboard.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        cell["id"] = f"{path.stem}-{i}"  # stable ids: regenerating gives a clean diff
        nb.cells.append(cell)
    nbformat.write(nb, path)


DASHBOARD = [
    ("md", """# pruneviz — see what pruning does to a neural network

**Pruning** removes weights from a trained network to make it smaller and faster. The question is always
*how much can we remove before the model gets worse?* This page lets you find out by hand, on seven small
networks trained by this project: two that read handwritten digits (scikit-learn's 8×8 digits, 360 test
images), an object detector that finds shapes in generated pictures (300 test images, scored by mAP), two that
read movie reviews (a GRU and a Transformer), one that hears spoken digits and one that reads a medical table.

**Try this:** drag the *global sparsity* slider to the right and watch the accuracy; then switch the
criterion from *magnitude* to *random* and compare; switch the scope to *structured* to remove whole
filters and see the FLOPs drop. *Undo* and *Reset* always bring the original model back, exactly."""),
    ("code", """import pruneviz as pv

pv.dashboard()"""),
]


if __name__ == "__main__":
    target = ROOT / "notebooks" / "dashboard.ipynb"
    write_notebook(target, DASHBOARD)
    print(f"wrote {target}", file=sys.stderr)
