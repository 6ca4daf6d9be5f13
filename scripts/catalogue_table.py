"""Print README's "Bad input" table: every row of tests/unit/test_bad_input_catalogue.py, run for real, with the
error class it raised and the start of its message.

    .venv/bin/python scripts/catalogue_table.py > /tmp/table.md
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

import pruneviz as pv  # noqa: E402
import test_bad_input_catalogue as catalogue  # noqa: E402
from pruneviz.data import digits_tensors, load_demo_model  # noqa: E402


def _env(folder: Path) -> catalogue.Env:
    x, y = digits_tensors("test")
    s = pv.PruningSession(load_demo_model("cnn"), scope="global")
    s.set_global_sparsity(0.3)
    (folder / "keep.txt").write_text("the user's own file")
    return catalogue.Env(s, x, y, folder)


def main() -> None:
    print("| # | case | error | message (start) |")
    print("|---|---|---|---|")
    for i, (case, do, error, _message) in enumerate(catalogue.CASES, 1):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                do(_env(Path(tmp)))
                raise SystemExit(f"{case}: raised nothing")
            except pv.PrunevizError as e:
                text = " ".join(str(e).split())
                short = text if len(text) <= 150 else text[:147].rsplit(" ", 1)[0] + " ..."
                short = short.replace("|", "\\|")
                print(f"| {i} | {case} | `{type(e).__name__}` | {short} |")


if __name__ == "__main__":
    main()
