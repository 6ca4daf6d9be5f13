"""Benchmark: slider change -> accuracy with the LiveEvaluator, against the loop a user would write today.

Three series, each over ``--moves`` random slider moves (seeded; at least 30 unless ``--quick``):

* ``digits_cnn``: the pretrained demo CNN (``load_demo_model("cnn")``) on the digits test split (360
  samples), a global-scope session. Timed from the ``session.set_global_sparsity(s)`` call (the mask update
  is included) until the LiveEvaluator reports the final accuracy for that generation (the listener's
  clock). Default Evaluator chunks (128, then 256).
* ``resnet18``: torchvision ResNet-18 (``weights=None``, 10 classes, ``torch.manual_seed(0)``) on 1,000
  synthetic 3x32x32 samples (seeded randn, random labels), ``first_chunk=100``, ``chunk_size=300``.
  Global moves (``set_global_sparsity`` in a global-scope session: every layer changes, so the prefix
  cache cannot help) and layer moves (``set_sparsity`` of a random ``layer4.*`` weight in a layer-scope
  session: the prefix cache skips the unchanged front of the network). For each: slider change -> first
  estimate, and -> final.
* ``naive``: what a user writes today, for the same moves: ``copy.deepcopy`` of the model, then
  ``torch.nn.utils.prune.l1_unstructured`` of the one layer (layer moves) or ``global_unstructured`` over
  every conv/linear weight (global moves), then the whole 1,000 samples in batches of 250 under
  ``torch.no_grad()``. ``speedup = naive median / pruneviz final median``. The naive loop runs right after
  each pruneviz move (the LiveEvaluator idle by then), so the two are measured in the same run, move by
  move, under the same machine load; ``*speedup_median_of_pairs`` is the median of the per-move ratios.

Headline keys: ``digits_cnn.final_ms_median``/``_p95``; ``resnet18.first_estimate_ms_median`` and
``resnet18.final_ms_median`` (global moves, the worst case; the ``layer_*`` keys hold the layer moves);
``resnet18.speedup_layer`` and ``resnet18.speedup_global``.

Sparsities are drawn uniformly from [0.05, 0.95]; every move is a new weight state, so the LiveEvaluator's
small cache of recent final results (which answers undo/redo at once) never hits. One untimed warm-up move
precedes each series. The prefix cache's first layer move runs the whole network (nothing cached yet):
it is one of the timed moves.

Usage::

    .venv/bin/python benchmarks/bench_live.py [--quick] [--moves N] [--threads N] [--json PATH]

Prints a table and PASS/FAIL against the targets; exits 0 unless the script itself errors.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from live_series import SERIES, TASK_TARGETS  # noqa: E402 - benchmarks/ is on sys.path when run as a script
from live_timing import live_moves, summary  # noqa: E402
from report import write_json  # noqa: E402

from pruneviz.core import PruningSession  # noqa: E402
from pruneviz.core.live import LiveEvaluator  # noqa: E402
from pruneviz.data import digits_tensors, load_demo_model  # noqa: E402

# Targets from the design (section 4) and the issue: (section, key, "<=" or ">=", limit)
TARGETS: list[tuple[str, str, str, float]] = [
    ("digits_cnn", "final_ms_median", "<=", 100.0),
    ("resnet18", "first_estimate_ms_median", "<=", 300.0),
    ("resnet18", "speedup_layer", ">=", 3.0),
    ("resnet18", "speedup_global", ">=", 2.0),
]

N_SAMPLES = 1000
NAIVE_BATCH = 250
RESNET_CHUNKS = {"first_chunk": 100, "chunk_size": 300}
SPARSITY_RANGE = (0.05, 0.95)


# --------------------------------------------------------------------------- digits CNN
def bench_digits(n_moves: int, rng: random.Random) -> dict:
    model = load_demo_model("cnn")
    x, y = digits_tensors("test")
    session = PruningSession(model, criterion="magnitude", scope="global")
    live = LiveEvaluator(session, (x, y))
    try:
        moves = [rng.uniform(*SPARSITY_RANGE) for _ in range(n_moves + 1)]
        r = live_moves(session, live, moves, session.set_global_sparsity)
    finally:
        live.close()
    fin, first, upd = summary(r["final"]), summary(r["first"]), summary(r["update"])
    return {
        "samples": len(y), "moves": len(r["final"]), "chunks": [list(b) for b in live.evaluator.bounds],
        "final_ms_median": fin["median"], "final_ms_p95": fin["p95"], "final_ms_max": fin["max"],
        "first_estimate_ms_median": first["median"], "first_estimate_ms_p95": first["p95"],
        "mask_update_ms_median": upd["median"],
        "baseline_accuracy": live.baseline.accuracy,
    }


# --------------------------------------------------------------------------- ResNet-18
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def synthetic_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_SAMPLES, 3, 32, 32, generator=g), torch.randint(0, 10, (N_SAMPLES,), generator=g)


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def naive_move(template: nn.Module, data: tuple[torch.Tensor, torch.Tensor], move: tuple) -> float:
    """The loop a user writes today; returns the accuracy."""
    kind, value, layer = move
    model = copy.deepcopy(template)
    if kind == "global":
        prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured, amount=value)
    else:
        prune.l1_unstructured(model.get_submodule(layer.rsplit(".", 1)[0]), "weight", amount=value)
    model.eval()
    x, y = data
    correct = 0
    with torch.no_grad():
        for a in range(0, len(y), NAIVE_BATCH):
            correct += int((model(x[a : a + NAIVE_BATCH]).argmax(1) == y[a : a + NAIVE_BATCH]).sum())
    return correct / len(y)


def bench_resnet(n_moves: int, rng: random.Random) -> dict:
    template = resnet18()
    data = synthetic_data()
    out: dict = {"samples": N_SAMPLES, **RESNET_CHUNKS, "naive_batch": NAIVE_BATCH}

    # global moves: one global-scope session
    g_moves = [("global", rng.uniform(*SPARSITY_RANGE), None) for _ in range(n_moves + 1)]
    gsession = PruningSession(copy.deepcopy(template), criterion="magnitude", scope="global")
    t = time.perf_counter()
    live = LiveEvaluator(gsession, data, **RESNET_CHUNKS)
    out["live_init_ms"] = round((time.perf_counter() - t) * 1000, 1)
    out["prefix_cache_active"] = live.prefix_cache_active
    out["chunks"] = [list(b) for b in live.evaluator.bounds]
    try:
        rg = live_moves(gsession, live, g_moves, lambda m: gsession.set_global_sparsity(m[1]),
                        naive=lambda m: naive_move(template, data, m))
    finally:
        live.close()

    # layer moves in the last third: a random layer4.* weight, in a layer-scope session
    lsession = PruningSession(copy.deepcopy(template), criterion="magnitude", scope="layer")
    deep = [n for n in lsession.names if n.startswith("layer4.")]
    l_moves = [("layer", rng.uniform(*SPARSITY_RANGE), rng.choice(deep)) for _ in range(n_moves + 1)]
    live = LiveEvaluator(lsession, data, **RESNET_CHUNKS)
    try:
        rl = live_moves(lsession, live, l_moves, lambda m: lsession.set_sparsity(m[2], m[1]),
                        naive=lambda m: naive_move(template, data, m))
    finally:
        live.close()
    out["layer_prefix_cache_stages"] = sorted(live._cache.entries)

    for key, r in (("global", rg), ("layer", rl)):
        prefix = "" if key == "global" else "layer_"
        first, fin, upd = summary(r["first"]), summary(r["final"]), summary(r["update"])
        nv = summary(r["naive"])
        out.update({
            f"{prefix}moves": len(r["final"]),
            f"{prefix}first_estimate_ms_median": first["median"],
            f"{prefix}first_estimate_ms_p95": first["p95"],
            f"{prefix}final_ms_median": fin["median"], f"{prefix}final_ms_p95": fin["p95"],
            f"{prefix}mask_update_ms_median": upd["median"],
            f"{prefix}final_ms_all": [round(v * 1000, 1) for v in r["final"]],
            f"{prefix}naive_ms_all": [round(v * 1000, 1) for v in r["naive"]],
            f"{prefix}naive_ms_median": nv["median"], f"{prefix}naive_ms_p95": nv["p95"],
            f"speedup_{key}": round(nv["median"] / fin["median"], 2),
            f"{prefix}speedup_median_of_pairs": round(
                statistics.median(a / b for a, b in zip(r["naive"], r["final"], strict=True)), 2),
        })
    # global moves: the same pruning rule on the same data, so pruneviz and the naive loop must agree. (Layer
    # moves are not comparable: the session keeps the sparsities set by earlier moves, while the naive loop,
    # as specified, prunes only the moved layer of a fresh copy.)
    out["max_abs_accuracy_diff_vs_naive"] = round(
        max(abs(a - b) for a, b in zip(rg["accuracy"], rg["naive_accuracy"], strict=True)), 6)
    out["first_estimate_samples"] = int(statistics.median(rg["first_n"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 moves per series (a smoke test; not the figures)")
    ap.add_argument("--moves", type=int, default=None, help="timed moves per series (default 40; quick: 6)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    ap.add_argument("--only", nargs="*", default=None,
                    help=f"run only these task series ({', '.join(SERIES)}) and keep the other figures of --json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_moves = args.moves or (6 if args.quick else 40)
    rng = random.Random(args.seed)

    t_all = time.perf_counter()
    results = {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "quick": args.quick, "moves_per_series": n_moves, "seed": args.seed,
            "timing": "wall clock from the session call (mask update included) to the LiveEvaluator listener "
                      "receiving the result; median/p95 over the timed moves after one untimed warm-up move",
            "targets": {f"{s}.{k}": f"{op} {v}" for s, k, op, v in TARGETS + TASK_TARGETS},
        },
    }
    if args.only is None:
        results["digits_cnn"] = bench_digits(n_moves, rng)
        results["resnet18"] = bench_resnet(n_moves, rng)
    elif args.json is not None and args.json.exists():  # keep the other series' figures from their own run
        import json

        kept = json.loads(args.json.read_text())
        results = {**{k: v for k, v in kept.items() if k not in ("meta", "checks")}, **results}
        results["meta"]["series_rerun"] = args.only
    for name, series in SERIES.items():
        if not args.only or name in args.only:
            results[name] = series(max(n_moves, 30) if not args.quick else n_moves, rng)
    results["meta"]["total_s"] = round(time.perf_counter() - t_all, 1)
    results["meta"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    checks = {}
    for section, key, op, limit in TARGETS + TASK_TARGETS:
        if section not in results:
            continue
        value = results[section][key]
        ok = value <= limit if op == "<=" else value >= limit
        checks[f"{section}.{key}"] = {"value": value, "target": f"{op} {limit}", "pass": ok}
    results["checks"] = checks

    d, r = results.get("digits_cnn"), results.get("resnet18")
    rows = [] if d is None or r is None else [
        ("digits CNN (360)", "global", d["first_estimate_ms_median"], d["final_ms_median"], d["final_ms_p95"],
         None, None),
        ("ResNet-18 (1000)", "global", r["first_estimate_ms_median"], r["final_ms_median"], r["final_ms_p95"],
         r["naive_ms_median"], r["speedup_global"]),
        ("ResNet-18 (1000)", "layer4.*", r["layer_first_estimate_ms_median"], r["layer_final_ms_median"],
         r["layer_final_ms_p95"], r["layer_naive_ms_median"], r["speedup_layer"]),
    ]
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {n_moves} moves per series"
          f"{' (QUICK)' if args.quick else ''}")
    head = (f"{'model':<18} {'moves':<9} {'first ms':>9} {'final ms':>9} {'final p95':>10} {'naive ms':>9} "
            f"{'speedup':>8}")
    print(head)
    print("-" * len(head))
    for name, kind, first, fin, p95, nv, sp in rows:
        nv_s = f"{nv:9.1f}" if nv is not None else f"{'-':>9}"
        sp_s = f"{sp:7.2f}x" if sp is not None else f"{'-':>8}"
        print(f"{name:<18} {kind:<9} {first:9.1f} {fin:9.1f} {p95:10.1f} {nv_s} {sp_s}")
    for name in SERIES:
        if name in results:
            t = results[name]
            print(f"{t['model'][:18]:<18} {'global':<9} {t['first_estimate_ms_median']:9.1f} {t['final_ms_median']:9.1f} "
                  f"{t['final_ms_p95']:10.1f} {'-':>9} {'-':>8}")
    print()
    for name, c in checks.items():
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {name} = {c['value']} (target {c['target']})")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
