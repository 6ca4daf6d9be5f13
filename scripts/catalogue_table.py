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

import test_bad_input_catalogue as catalogue  # noqa: E402

import pruneviz as pv  # noqa: E402


def main() -> None:
    print("| # | case | error | message (start) |")
    print("|---|---|---|---|")
    for i, (case, do, _error, _message) in enumerate(catalogue.CASES, 1):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                do(catalogue.make_env(Path(tmp)))
                raise SystemExit(f"{case}: raised nothing")
            except pv.PrunevizError as e:
                text = " ".join(str(e).split())
                short = text if len(text) <= 150 else text[:147].rsplit(" ", 1)[0] + " ..."
                short = short.replace("|", "\\|")
                print(f"| {i} | {case} | `{type(e).__name__}` | {short} |")


if __name__ == "__main__":
    main()
