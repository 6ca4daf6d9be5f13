"""Benchmark: pruneviz on big models: ViT-B/16 (86 M weights) and ConvNeXt-T (28 M), ``weights=None``.

Per model, in one process:

* ``session_s``: ``PruningSession(model, scope="global")`` (scores, the global ranking, the first masks);
* ``criterion_switch_s`` (global magnitude -> random) and ``scope_switch_s`` (global -> layer);
* ``update_ms_median``: a slider step of 1 % in global scope (what arrow keys and drags produce), median of 30;
  ``update_ms_jump_median``: a jump to a random sparsity (a click far along the slider), median of 10;
* ``explore_open_s``: ``pv.explore(model, data)`` with 16 synthetic 3x224x224 images (the unpruned model's
  evaluation included, no kernel: widgets fall back to a dummy comm), in a process that has opened the demo
  explorer once (as a notebook kernel has: one-off imports such as torch's FLOP counter's are paid there);
  ``forward_16_images_s``: one plain forward of the model over those images, for scale (the explorer evaluates
  the unpruned model once before it opens, and runs it on a sample or two to find the task and the FLOPs);
* ``memory_overhead_x``: what the session keeps beyond the model's own weights (original weights, ranks or
  pruning order, the engine's owners), as a multiple of the prunable weights' bytes; ``peak_rss_overhead_x``:
  the process's peak RSS growth while the session was created, the same way (temporaries included).

Usage::

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--json PATH]   (default benchmarks/results/scale.json)

Targets (issue #14): session and a switch <= 5 s, a slider move <= 50 ms, the explorer <= 10 s, memory
<= 2.5x. Exits 0 unless the script itself fails.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from report import write_json  # noqa: E402 - benchmarks/ is on sys.path when run as a script

import pruneviz as pv  # noqa: E402
from pruneviz.core.ranking import Ordered  # noqa: E402

MODELS = ("vit_b_16", "convnext_tiny")
TARGETS = {"session_s": 5.0, "criterion_switch_s": 5.0, "scope_switch_s": 5.0, "update_ms_median": 50.0,
           "explore_open_s": 10.0, "memory_overhead_x": 2.5}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _kept_bytes(session: pv.PruningSession) -> int:
    """Bytes the session holds beyond the model: originals, ranks / orders (and the global owners), masks."""
    total = sum(t.numel() * t.element_size() for t in session._originals.values())
    total += sum(t.numel() * t.element_size() for t in session._extra_originals.values())
    owners = set()
    for r in session._ranks.values():
        if isinstance(r, Ordered):
            total += r.order.numel() * r.order.element_size()
            if r.owner is not None and id(r.owner) not in owners:
                owners.add(id(r.owner))
                total += r.owner.owner.nbytes + r.owner.table.nbytes
        elif isinstance(r, torch.Tensor):
            total += r.numel() * r.element_size()
    total += sum(m.numel() for m in session._mask_cache.values())
    return total


def bench(name: str, steps: int, jumps: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    prunable_bytes = None
    rss0 = _peak_rss_mb()
    t = time.perf_counter()
    s = pv.PruningSession(model, scope="global")
    session_s = time.perf_counter() - t
    peak = _peak_rss_mb() - rss0
    prunable_bytes = 4 * s.summary().prunable_params
    rng = random.Random(0)
    v = 0.3
    s.set_global_sparsity(v)
    step_ms = []
    for _ in range(steps):
        v = min(0.95, max(0.05, v + rng.choice((-0.01, 0.01))))
        t = time.perf_counter()
        s.set_global_sparsity(v)
        step_ms.append(1000 * (time.perf_counter() - t))
    jump_ms = []
    for _ in range(jumps):
        t = time.perf_counter()
        s.set_global_sparsity(rng.uniform(0.05, 0.95))
        jump_ms.append(1000 * (time.perf_counter() - t))
    overhead = _kept_bytes(s) / prunable_bytes
    t = time.perf_counter()
    s.set_criterion("random")
    crit_s = time.perf_counter() - t
    t = time.perf_counter()
    s.set_scope("layer")
    scope_s = time.perf_counter() - t
    del s
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(16, 3, 224, 224, generator=g), torch.randint(0, 1000, (16,), generator=g))
    t = time.perf_counter()
    app = pv.explore(model, data)
    open_s = time.perf_counter() - t
    app.close()
    with torch.inference_mode():  # one forward over the same images: the part of the opening that is the model's
        t = time.perf_counter()
        model(data[0])
        forward_s = time.perf_counter() - t
    return {
        "prunable_weights": prunable_bytes // 4, "engine": "order" if prunable_bytes // 4 >= 40_000_000 else "rank",
        "session_s": round(session_s, 2), "criterion_switch_s": round(crit_s, 2), "scope_switch_s": round(scope_s, 2),
        "update_ms_median": round(statistics.median(step_ms), 1), "update_ms_p95": round(sorted(step_ms)[
            int(0.95 * (len(step_ms) - 1))], 1),
        "update_ms_jump_median": round(statistics.median(jump_ms), 1),
        "explore_open_s": round(open_s, 2), "forward_16_images_s": round(forward_s, 2),
        "memory_overhead_x": round(overhead, 3),
        "peak_rss_overhead_x": round(peak * 2**20 / prunable_bytes, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer moves (a smoke test)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args(argv)
    steps, jumps = (8, 3) if args.quick else (30, 10)
    results = {"meta": {"torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
                        "targets": TARGETS, "date": time.strftime("%Y-%m-%d %H:%M")}}
    pv.explore().close()  # one-off imports (plotly, the FLOP counter's torch._dynamo), as in a used kernel
    for name in MODELS:
        results[name] = bench(name, steps, jumps)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads")
    head = ["model", "weights", "session s", "criterion s", "scope s", "1% step ms", "jump ms", "explore s", "memory x"]
    print("".join(f"{h:>13}" for h in head))
    for name in MODELS:
        r = results[name]
        print(f"{name:>13}{r['prunable_weights'] / 1e6:>12.1f}M{r['session_s']:>13}{r['criterion_switch_s']:>13}"
              f"{r['scope_switch_s']:>13}{r['update_ms_median']:>13}{r['update_ms_jump_median']:>13}"
              f"{r['explore_open_s']:>13}{r['memory_overhead_x']:>13}")
    for name in MODELS:
        for key, limit in TARGETS.items():
            value = results[name][key]
            print(f"{'PASS' if value <= limit else 'FAIL'}  {name}.{key} = {value} (target <= {limit})")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
