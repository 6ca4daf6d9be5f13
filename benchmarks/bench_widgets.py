"""Benchmark: the explorer's cost per slider move, kernel side, and what it sends to the browser.

For the demo CNN on the digits test split (``digits_cnn``) and a torchvision ResNet-18 (``weights=None``,
10 classes, 64 synthetic 3x32x32 samples; ``resnet18``) this measures

* ``update_ms_*``: setting the global slider's value (as a front-end message would) until the explorer's
  synchronous handlers return: the session applies the masks, then every view re-renders. The live
  evaluator runs in its own thread meanwhile (it is woken by the same change and competes for the two
  cores), so the figure is conservative; evaluation itself is not part of it. Before each timed move the
  previous evaluation is allowed to finish.
* ``bytes_per_update``: bytes sent to the front end for one move, from the slider change until evaluation
  and FLOPs counting are idle (so it includes the accuracy label, progress, trail, per-class bars and
  gallery images that the evaluation results bring), measured by replacing every widget's comm with a
  recorder of each message's JSON size plus its binary buffers. ``bytes_sync`` is the part sent by the
  synchronous handlers alone.
* ``structured_update_ms_median``: the same move in structured scope (the FLOPs after channel removal are
  counted in a background thread, not in the timed part); ``structured_flops_s``: from the move until that
  count is shown (it starts after a 0.2 s debounce).
* ``initial_state_bytes``: the full widget state a page downloads when it opens the explorer, without the
  two FigureWidgets' plotly.js bundles (``esm_bytes``, ~5 MB each).

Usage::

    .venv/bin/python benchmarks/bench_widgets.py [--quick] [--json PATH]

Exits 0 unless the script itself errors (targets are reported, not enforced).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore", category=DeprecationWarning)

from report import write_json  # noqa: E402 - benchmarks/ is on sys.path when run as a script

import pruneviz as pv  # noqa: E402
from pruneviz.widgets.testing import live_widget_count, message_size, record_traffic  # noqa: E402

TARGETS = {
    "digits_cnn": {"update_ms": 50.0, "bytes": 50_000},
    "resnet18": {"update_ms": 100.0, "bytes": 50_000},
}


def _walk(w: Any):
    yield w
    for attr in ("layout", "style"):
        sub = getattr(w, attr, None)
        if sub is not None and hasattr(sub, "get_state"):
            yield sub
    for child in getattr(w, "children", ()):
        yield from _walk(child)


def initial_state_bytes(app: Any) -> tuple[int, int]:
    """Bytes of the full state of every widget in the explorer, and of the plotly.js bundles among it."""
    total = esm = 0
    seen: set[int] = set()
    from ipywidgets.widgets.widget import _remove_buffers

    for w in _walk(app):
        if id(w) in seen:
            continue
        seen.add(id(w))
        state = w.get_state()
        code = state.pop("_esm", None)
        if code is not None:
            esm += len(code.encode()) if isinstance(code, str) else len(code)
        state, _, buffers = _remove_buffers(state)
        total += message_size(state, buffers)
    return total, esm


def measure(app: Any, values: list[float]) -> dict[str, Any]:
    slider = app.controls.global_slider
    times, sent, sent_sync = [], [], []
    for v in values:
        assert app.wait_idle(120), "evaluation did not finish"
        with record_traffic() as traffic:
            t0 = time.perf_counter()
            slider.value = round(100 * v, 6)  # the slider counts in percent
            times.append(1000 * (time.perf_counter() - t0))
            sent_sync.append(traffic.bytes)
            assert app.wait_idle(120), "evaluation did not finish"
        sent.append(traffic.bytes)
        if app.errors.text:
            raise RuntimeError(f"the explorer shows an error: {app.errors.text}")
    return {"times": times, "bytes": sent, "bytes_sync": sent_sync}


def bench_model(name: str, app: Any, n_moves: int, rng: random.Random) -> dict[str, Any]:
    assert app.wait_idle(120)
    state_bytes, esm_bytes = initial_state_bytes(app)
    values = [round(rng.uniform(0.05, 0.95), 2) for _ in range(n_moves + 2)]
    widgets_before = live_widget_count()
    glob = measure(app, values)
    for key in glob:
        glob[key] = glob[key][2:]  # the first two moves warm caches (bins, scores)
    app.controls.scope.value = "structured"
    assert app.wait_idle(120)
    struct = measure(app, values[: max(3, n_moves // 3)])
    t0 = time.perf_counter()
    app.controls.global_slider.value = 33.0
    app.summary.wait_idle(120)
    flops_s = time.perf_counter() - t0
    app.wait_idle(120)
    s = app.session
    t = TARGETS[name]
    result = {
        "n_moves": len(glob["times"]),
        "n_prunable_weights": s.summary().prunable_params,
        "n_tensors": len(s.targets),
        "update_ms_median": round(statistics.median(glob["times"]), 2),
        "update_ms_p90": round(sorted(glob["times"])[int(0.9 * (len(glob["times"]) - 1))], 2),
        "update_ms_max": round(max(glob["times"]), 2),
        "bytes_per_update": int(statistics.median(glob["bytes"])),
        "bytes_per_update_max": int(max(glob["bytes"])),
        "bytes_sync_median": int(statistics.median(glob["bytes_sync"])),
        "structured_update_ms_median": round(statistics.median(struct["times"]), 2),
        "structured_bytes_max": int(max(struct["bytes"])),
        "structured_flops_s": round(flops_s, 3),
        "initial_state_bytes": state_bytes,
        "esm_bytes": esm_bytes,
        "widgets_added_by_moves": live_widget_count() - widgets_before,
        "target_update_ms": t["update_ms"],
        "target_bytes": t["bytes"],
    }
    result["pass_update_ms"] = result["update_ms_median"] <= t["update_ms"]
    result["pass_bytes"] = result["bytes_per_update_max"] <= t["bytes"]
    return result


def resnet18_app() -> Any:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    return pv.explore(model, (x, y))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer moves")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_moves = 6 if args.quick else 15
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "quick": args.quick,
            "seed": args.seed,
            "timing": "median over seeded random global-slider moves after two warm-up moves; the live "
                      "evaluator runs in its own thread meanwhile (not part of the time)",
            "bytes": "JSON + binary buffers of every comm message from the move until evaluation is idle",
            "targets": TARGETS,
        }
    }
    for name, factory in (("digits_cnn", lambda: pv.explore()), ("resnet18", resnet18_app)):
        t0 = time.perf_counter()
        app = factory()
        build_s = time.perf_counter() - t0
        try:
            res = bench_model(name, app, n_moves, random.Random(args.seed))
        finally:
            app.close()
        res["build_s"] = round(build_s, 2)
        results[name] = res

    header = f"{'model':<11} {'update ms (median/p90)':>23} {'target':>7} {'bytes/update (med/max)':>23} {'target':>7}  result"
    print(header)
    print("-" * len(header))
    for name in ("digits_cnn", "resnet18"):
        r = results[name]
        ok = r["pass_update_ms"] and r["pass_bytes"]
        print(f"{name:<11} {r['update_ms_median']:>11.1f} / {r['update_ms_p90']:<9.1f} {r['target_update_ms']:>7.0f} "
              f"{r['bytes_per_update']:>11,} / {r['bytes_per_update_max']:<9,} {r['target_bytes']:>7,}  "
              f"{'PASS' if ok else 'FAIL'}")
    print()
    for name in ("digits_cnn", "resnet18"):
        r = results[name]
        print(f"{name}: build {r['build_s']} s; sync part {r['bytes_sync_median']:,} B; structured move "
              f"{r['structured_update_ms_median']} ms (+ FLOPs after channel removal {r['structured_flops_s']} s "
              f"in the background); page state {r['initial_state_bytes']:,} B + plotly.js {r['esm_bytes']:,} B; "
              f"widgets added by the moves: {r['widgets_added_by_moves']}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
