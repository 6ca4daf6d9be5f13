"""Benchmark: what structured pruning actually buys on a CPU: masked vs physically removed channels.

For torchvision ResNet-18 and MobileNetV2 (``weights=None``: random init, no download) at 3x224x224:

* the session: ``PruningSession(model, criterion="l1_filter", scope="structured", example_input=x)
  .set_global_sparsity(0.5)``, i.e. half of the output channels of every layer but the classifier, the session's
  own channel choices; with the example input the session couples the layers tied by residual adds and
  depthwise convolutions (they rank and prune the same channels), so the residual stream can go too;
* ``slim(session, x)``: those channels physically removed where that leaves the outputs unchanged (see
  ``kept``); the side figure ``independent`` is the same without coupling (each layer its own channels:
  a ResNet's residual stream then keeps every channel);
* latency at batch 1 and 32, intra-op threads pinned (default 1), ``torch.utils.benchmark`` blocked_autorange,
  median and IQR in ms: the dense model, the masked model (zeros in place: same shapes), the removed model,
  and the removed model exported to ONNX in ONNX Runtime (same thread count);
* ``outputs_match``: removed = masked to 1e-5 x max(1, max |output|) on the example input (BatchNorm statistics
  are randomised like a trained model's first, so the outputs are not ~0);
  ``reload_ok``: ``save_slim`` -> a fresh Python process -> ``load_slim`` gives the same outputs.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_removal.py [--quick] [--threads 1 [2]] [--min-run-time S]
        [--json PATH]   (default: benchmarks/results/removal.json)

Timings on a shared machine are noisy: the JSON records what was measured, with the IQR. It exits 0 unless
the script itself fails (the speed-up target is reported, not enforced).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from report import write_json  # noqa: E402 - benchmarks/ is on sys.path when run as a script

from pruneviz.core import PruningSession  # noqa: E402
from pruneviz.core.latency import measure_latency, measure_onnx_latency  # noqa: E402
from pruneviz.core.removal import slim  # noqa: E402
from pruneviz.core.slim_export import export_onnx, save_slim  # noqa: E402

RATIO = 0.5
BATCHES = (1, 32)
TARGET_SPEEDUP = {"resnet18": 2.5}  # speedup_removed_b32 (design target; reported, not enforced)
MODELS = {"resnet18": "torchvision.models:resnet18", "mobilenet_v2": "torchvision.models:mobilenet_v2"}
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "removal.json"

RELOAD = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from pruneviz.core.slim_export import load_slim
    x, want = torch.load(sys.argv[2], weights_only=True)
    model = load_slim(sys.argv[1])
    with torch.inference_mode():
        print(float((model(x) - want).abs().max()))
    """
)


def _pooled(rows: list) -> dict[str, dict[str, float]]:
    """Median and IQR over the per-call times of several measurements of one variant."""
    out = {}
    for b in BATCHES:
        times = sorted(t for r in rows for row in r.rows if row.batch_size == b for t in row.times_ms)
        q1, med, q3 = (statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3)
        out[f"b{b}"] = {"median": round(med, 3), "iqr": round(q3 - q1, 3), "min": round(times[0], 3),
                        "runs": len(times)}
    return out


def measure_all(variants: dict, x: torch.Tensor, threads: int, min_run_time: float, rounds: int) -> dict:
    """Latency of every variant, interleaved: ``rounds`` rounds (the order rotating), each measuring every variant
    for ``min_run_time / rounds`` seconds, the per-call times pooled. Load from other processes then hits all
    variants alike instead of whichever was being timed when it came."""
    reports: dict[str, list] = {k: [] for k in variants}
    names = list(variants)
    for i in range(rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            kind, obj = variants[name]
            kw = {"batch_sizes": BATCHES, "threads": threads, "min_run_time": min_run_time / rounds}
            measure = measure_onnx_latency if kind == "onnx" else measure_latency
            reports[name].append(measure(obj, x, **kw))
    return {k: _pooled(v) for k, v in reports.items()}


def reload_ok(result, arch: str, x: torch.Tensor) -> tuple[bool, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path, expected = Path(tmp, "slim.pt"), Path(tmp, "expected.pt")
        save_slim(result, path, arch=arch)
        with torch.inference_mode():
            torch.save((x, result.model(x)), expected)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", RELOAD, str(path), str(expected)], capture_output=True,
                              text=True, env=env, timeout=300)
    if done.returncode != 0:
        print(done.stderr[-1500:], file=sys.stderr)
        return False, float("inf")
    diff = float(done.stdout.split()[-1])
    return diff <= 1e-6, diff


def trained_like(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """BatchNorm statistics and affine parameters like a trained model's (weights=None leaves mean 0, var 1,
    scale 1, shift 0, and MobileNetV2's outputs ~1e-10): outputs_match then compares real numbers, and a
    BatchNorm of zeros outputs a nonzero shift. Speed is unaffected."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return model.eval()


def bench_model(name: str, threads: list[int], min_run_time: float, rounds: int) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = trained_like(torchvision.models.get_model(name, weights=None))
    dense = copy.deepcopy(model)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    s = PruningSession(model, criterion="l1_filter", scope="structured", example_input=x)
    s.set_global_sparsity(RATIO)
    t0 = time.perf_counter()
    r = slim(s, x)
    slim_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(r.model, x, Path(tmp, f"{name}.onnx"))
        onnx_bytes = onnx.path.read_bytes()
    ok, reload_diff = reload_ok(r, MODELS[name], x)
    alone = PruningSession(copy.deepcopy(dense), criterion="l1_filter", scope="structured")  # no coupling
    alone.set_global_sparsity(RATIO)
    ga = slim(alone, x)
    variants = {"dense": ("torch", dense), "masked": ("torch", model), "removed": ("torch", r.model),
                "onnxruntime": ("onnx", onnx_bytes), "independent": ("torch", ga.model)}
    per_threads = {n: measure_all(variants, x, n, min_run_time, rounds) for n in threads}
    lat = dict(per_threads[threads[0]])
    ga_lat = lat.pop("independent")
    b32 = f"b{BATCHES[-1]}"
    result = {
        "macs_ratio": round(r.macs_ratio, 4),
        "params_ratio": round(r.params_ratio, 4),
        "latency_ms": lat,
        "speedup_removed_b32": round(lat["dense"][b32]["median"] / lat["removed"][b32]["median"], 3),
        "speedup_masked_b32": round(lat["dense"][b32]["median"] / lat["masked"][b32]["median"], 3),
        "outputs_match": bool(r.outputs_match),
        "reload_ok": ok,
    }
    detail = {
        "macs_before": r.macs_before, "macs_after": r.macs_after, "params_before": r.params_before,
        "params_after": r.params_after, "max_abs_diff": r.max_abs_diff, "reload_max_abs_diff": reload_diff,
        "layers_removed": len(r.removed), "layers_kept": len(r.kept), "slim_seconds": round(slim_s, 2),
        "onnx_exporter": onnx.exporter, "onnx_max_abs_diff": onnx.max_abs_diff,
        "kept_reasons": sorted({k.reason.split(" (")[0].split(":")[0] for k in r.kept}),
        "other_threads": {str(n): v for n, v in per_threads.items() if n != threads[0]},
        "coupled_groups": len(s.coupled),
        "independent": {
            "what": "the session without example_input: every layer ranks its own channels, so layers coupled "
                    "by residual adds keep the channels any of them keeps",
            "macs_ratio": round(ga.macs_ratio, 4), "params_ratio": round(ga.params_ratio, 4),
            "outputs_match": bool(ga.outputs_match), "layers_kept": len(ga.kept), "latency_ms": ga_lat,
            "speedup_removed_b32": round(lat["dense"]["b32"]["median"] / ga_lat["b32"]["median"], 3),
        },
    }
    return result, detail


def print_report(results: dict, details: dict, meta: dict) -> None:
    print(f"torch {meta['torch']}, {meta['cpu_count']} CPUs, {meta['threads']} intra-op thread(s), "
          f"3x224x224, structured L1 at channel ratio {RATIO} (every layer but the classifier), "
          f"min_run_time {meta['min_run_time']} s per figure\n")
    cols = ["model", "variant", "b1 ms", "b1 iqr", "b32 ms", "b32 iqr", "b32 min", "x b32", "x b32 min"]
    print(f"{cols[0]:>13}{cols[1]:>13}" + "".join(f"{c:>10}" for c in cols[2:]))
    for name, r in results.items():
        lat = r["latency_ms"]
        for variant in ("dense", "masked", "removed", "onnxruntime"):
            v = lat[variant]
            speed = lat["dense"]["b32"]["median"] / v["b32"]["median"]
            speed_min = lat["dense"]["b32"]["min"] / v["b32"]["min"]
            print(f"{name:>13}{variant:>13}{v['b1']['median']:>10.1f}{v['b1']['iqr']:>10.1f}"
                  f"{v['b32']['median']:>10.1f}{v['b32']['iqr']:>10.1f}{v['b32']['min']:>10.1f}{speed:>10.2f}"
                  f"{speed_min:>10.2f}")
    print("x = dense / variant (medians; 'min': fastest runs, less sensitive to other processes' load)")
    print()
    for name, r in results.items():
        d = details[name]
        target = TARGET_SPEEDUP.get(name)
        verdict = "" if target is None else (
            f" (target >= {target}: {'PASS' if r['speedup_removed_b32'] >= target else 'NOT MET'})")
        print(f"{name}: MACs x{r['macs_ratio']:.3f}, params x{r['params_ratio']:.3f}, removed speed-up at b32 "
              f"{r['speedup_removed_b32']:.2f}x{verdict}, masked {r['speedup_masked_b32']:.2f}x; outputs_match "
              f"{r['outputs_match']} (max diff {d['max_abs_diff']:.2g}), reload_ok {r['reload_ok']}; "
              f"{d['layers_removed']} layers slimmed, {d['layers_kept']} kept ({'; '.join(d['kept_reasons'])})")
        ga = d["independent"]
        print(f"{name}: without coupling (each layer its own channels): MACs x{ga['macs_ratio']:.3f}, b32 speed-up "
              f"{ga['speedup_removed_b32']:.2f}x, outputs_match {ga['outputs_match']}, {ga['layers_kept']} layers kept")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="ResNet-18 only, min_run_time 0.5 s")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="intra-op threads (first one in the keys)")
    ap.add_argument("--min-run-time", type=float, default=None, help="seconds per figure (default 3, --quick 0.5)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per figure (default 3)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads[0])
    min_run_time = args.min_run_time or (0.5 if args.quick else 3.0)
    models = ["resnet18"] if args.quick else list(MODELS)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads[0],
        "threads_measured": args.threads, "nice": os.nice(0), "min_run_time": min_run_time, "rounds": args.rounds,
        "quick": args.quick,
        "input": [1, 3, 224, 224], "batch_sizes": list(BATCHES), "ratio": RATIO,
        "macs": "torch.utils.flop_counter FLOPs / 2", "targets": {f"{k}_speedup_removed_b32_min": v
                                                                  for k, v in TARGET_SPEEDUP.items()},
        "timing": "torch.utils.benchmark.Timer.blocked_autorange(min_run_time / rounds), num_threads pinned, "
                  "after a warm-up, inference mode, variants interleaved over `rounds` rounds and the per-call times "
                  "pooled; ONNX Runtime with intra_op_num_threads = threads; latency_ms in milliseconds (median, "
                  "IQR, fastest block, runs = timed blocks)",
    }
    results, details = {}, {}
    for name in models:
        results[name], details[name] = bench_model(name, args.threads, min_run_time, args.rounds)
    meta["details"] = details
    print_report(results, details, meta)
    write_json(args.json, {"meta": meta, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
