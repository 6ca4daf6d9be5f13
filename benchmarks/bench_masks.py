"""Benchmark: a global-sparsity change with pruneviz vs ``torch.nn.utils.prune.global_unstructured``.

For torchvision ResNet-18 and ResNet-50 (``weights=None``: random init, no download) this times

* pruneviz: ``PruningSession(model, criterion="magnitude", scope="global").set_global_sparsity(s)``.
  The session ranks the scores once when it is created (reported as ``pruneviz_init_ms``, not part of
  the timed update); every timed call writes the masked weights in place.
* torch: ``prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=k)`` on the
  same conv/linear weights, applied to a fresh ``copy.deepcopy`` of a template model (torch's pruning
  compounds, so each change needs a fresh model). Only the prune call is timed, NOT the deepcopy
  (the deepcopy time is reported separately as ``torch_deepcopy_ms``). ``amount`` is passed as the
  same integer count pruneviz prunes, so both prune exactly the same number of weights.

Each figure is the median of several runs: moves to random sparsities (seeded RNG), and separately
small slider steps of +1 % (pruneviz only: torch has no incremental mode, every change is a full
prune). One untimed warm-up call precedes each series.

Memory: the bytes of the tensors the session keeps beyond the model's own weights (original weights,
global ranks, the bool mask cache after ``session.masks`` was read once, original biases; each storage
counted once), divided by the bytes of the prunable weight tensors. For torch the same count over
``weight_orig`` + ``weight_mask`` + ``weight`` + the forward-pre-hook's mask, divided by the plain
weights' bytes.

Usage::

    .venv/bin/python benchmarks/bench_masks.py [--quick] [--threads N] [--json PATH]

It always exits 0 unless the script itself errors (targets are reported, not enforced).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from report import write_json  # noqa: E402 - benchmarks/ is on sys.path when run as a script

from pruneviz.core import PruningSession  # noqa: E402
from pruneviz.core.masks import n_pruned  # noqa: E402

# Targets from the design (section 4) and the issue.
TARGET_UPDATE_MS = 20.0  # ResNet-18 mask update
TARGET_SPEEDUP = 50.0  # ResNet-18, torch_prune_ms / pruneviz_ms
TARGET_MEMORY_X = 2.5  # session overhead / weight bytes, magnitude criterion
TARGETS: dict[str, list[tuple[str, str, float]]] = {  # model -> (metric, "<=" or ">=", limit)
    "resnet18": [
        ("pruneviz_ms", "<=", TARGET_UPDATE_MS),
        ("pruneviz_step_ms", "<=", TARGET_UPDATE_MS),
        ("speedup", ">=", TARGET_SPEEDUP),
        ("memory_overhead_x", "<=", TARGET_MEMORY_X),
    ],
    "resnet50": [("memory_overhead_x", "<=", TARGET_MEMORY_X)],
}

MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
}


# --------------------------------------------------------------------------- memory
def _tensors_in(obj: object, seen: set[int] | None = None) -> Iterable[torch.Tensor]:
    """Every tensor reachable through dicts, lists, tuples, sets and plain objects' ``__dict__``."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_in(v, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _tensors_in(v, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
        yield from _tensors_in(vars(obj), seen)


def storage_bytes(tensors: Iterable[torch.Tensor | None], counted: set[int] | None = None) -> int:
    """Bytes of the storages behind ``tensors``, each storage counted once (views share one storage).

    ``counted`` (data pointers already counted) is updated, so several calls can share it.
    """
    counted = set() if counted is None else counted
    total = 0
    for t in tensors:
        if t is None:
            continue
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr in counted or st.nbytes() == 0:
            continue
        counted.add(ptr)
        total += st.nbytes()
    return total


def session_memory(s: PruningSession) -> dict[str, int]:
    """Bytes the session keeps beyond the model's own weights, per part (each storage once).

    Call it after ``s.masks`` was read once, so the lazily computed mask cache is included.
    ``other`` is a sanity check: tensors reachable from the session's other attributes that are
    neither the model's own parameters/buffers nor already counted (0 for the magnitude criterion).
    """
    model_ptrs = {
        t.untyped_storage().data_ptr() for t in list(s.model.parameters()) + list(s.model.buffers())
    }
    counted = set(model_ptrs)  # the model's own tensors are never counted
    parts = {
        "originals": storage_bytes(s._originals.values(), counted),
        "ranks": storage_bytes(s._ranks.values(), counted),
        "mask_cache": storage_bytes(s._mask_cache.values(), counted),
        "bias_originals": storage_bytes(s._extra_originals.values(), counted),
    }
    rest = {k: v for k, v in vars(s).items() if k not in {"model", "_params", "_extra_params"}}
    parts["other"] = storage_bytes(_tensors_in(rest), counted)
    parts["total"] = sum(parts.values())
    return parts


def torch_prune_memory(pruned: list[tuple[nn.Module, str]]) -> dict[str, int]:
    """Bytes torch.nn.utils.prune keeps for the pruned tensors: weight_orig + weight_mask + weight +
    the forward-pre-hooks' state (CustomFromMask keeps a view of the global float mask)."""
    counted: set[int] = set()
    parts = {"orig": 0, "mask": 0, "weight": 0, "hooks": 0}
    for module, name in pruned:
        parts["orig"] += storage_bytes([getattr(module, name + "_orig")], counted)
        parts["mask"] += storage_bytes([getattr(module, name + "_mask")], counted)
        parts["weight"] += storage_bytes([getattr(module, name)], counted)
    for module, _ in pruned:
        hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        parts["hooks"] += storage_bytes(_tensors_in(hooks), counted)
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------- timing
def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def prune_params(model: nn.Module, names: list[str]) -> list[tuple[nn.Module, str]]:
    """(module, "weight") pairs for the session's targets, looked up in ``model`` (a copy)."""
    out = []
    for full in names:
        module_name, _, attr = full.rpartition(".")
        out.append((model.get_submodule(module_name), attr))
    return out


def torch_prune_once(template: nn.Module, names: list[str], amount: int) -> tuple[float, float, nn.Module]:
    """(deepcopy ms, prune ms, pruned model): only the prune call is the timed figure."""
    gc.collect()
    t0 = time.perf_counter()
    model = copy.deepcopy(template)
    t1 = time.perf_counter()
    params = prune_params(model, names)
    t2 = time.perf_counter()
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    t3 = time.perf_counter()
    return (t1 - t0) * 1e3, (t3 - t2) * 1e3, model


def bench_model(name: str, repeats: int, seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    template = MODELS[name]().eval()
    work = copy.deepcopy(template)

    t0 = time.perf_counter()
    s = PruningSession(work, criterion="magnitude", scope="global")
    init_ms = (time.perf_counter() - t0) * 1e3
    names = [t.name for t in s.targets]
    n_weights = sum(t.numel for t in s.targets)
    weight_bytes = storage_bytes(s._params.values())

    rng = random.Random(seed)
    moves = [round(rng.uniform(0.05, 0.95), 4) for _ in range(repeats)]
    start = 0.50
    steps = [round(start + 0.01 * (i + 1), 4) for i in range(repeats)]

    # pruneviz: random moves (one untimed warm-up first), then +1 % steps from `start`.
    s.set_global_sparsity(0.5 * (moves[0] + 0.5))
    pv_moves = [_timed(lambda v=v: s.set_global_sparsity(v)) for v in moves]
    s.set_global_sparsity(start)
    pv_steps = [_timed(lambda v=v: s.set_global_sparsity(v)) for v in steps]

    # Memory: read every mask once so the lazily computed cache is included.
    _ = s.masks
    mem = session_memory(s)

    # torch: a fresh deepcopy per change; only the prune call is timed. One untimed warm-up.
    torch_prune_once(template, names, n_pruned(0.5, n_weights))
    tp_moves, tp_copies = [], []
    last_model = None
    for v in moves:
        del last_model
        cp_ms, pr_ms, last_model = torch_prune_once(template, names, n_pruned(v, n_weights))
        tp_copies.append(cp_ms)
        tp_moves.append(pr_ms)
    pruned = prune_params(last_model, names)
    tmem = torch_prune_memory(pruned)

    # Sanity check (untimed): same sparsity -> same number of zeros, masks (almost) identical (ties
    # between equal |w| may be broken differently by topk).
    s.set_global_sparsity(moves[-1])
    pv_keep = torch.cat([s.mask(n).reshape(-1) for n in names])
    tp_keep = torch.cat([getattr(m, p + "_mask").reshape(-1).bool() for m, p in pruned])
    pv_zero = int(sum(s.zeros(n) for n in names))
    tp_zero = int((~tp_keep).sum())
    agree = float((pv_keep == tp_keep).float().mean())
    weights_equal = all(
        torch.equal(s._params[n], getattr(m, p)) for n, (m, p) in zip(names, pruned, strict=True)
    )
    del last_model, pruned

    pv_ms, tp_ms = _median(pv_moves), _median(tp_moves)
    pv_step_ms = _median(pv_steps)
    return {
        "n_weights": n_weights,
        "n_tensors": len(names),
        "weight_bytes": weight_bytes,
        "repeats": repeats,
        "pruneviz_ms": round(pv_ms, 3),
        "pruneviz_step_ms": round(pv_step_ms, 3),
        "torch_prune_ms": round(tp_ms, 3),
        "speedup": round(tp_ms / pv_ms, 2),
        "speedup_step": round(tp_ms / pv_step_ms, 2),
        "memory_overhead_x": round(mem["total"] / weight_bytes, 4),
        "pruneviz_total_memory_x": round((mem["total"] + weight_bytes) / weight_bytes, 4),
        "torch_prune_memory_x": round(tmem["total"] / weight_bytes, 4),
        "torch_prune_overhead_x": round((tmem["total"] - weight_bytes) / weight_bytes, 4),
        "pruneviz_min_ms": round(min(pv_moves), 3),
        "pruneviz_step_min_ms": round(min(pv_steps), 3),
        "torch_prune_min_ms": round(min(tp_moves), 3),
        "pruneviz_init_ms": round(init_ms, 1),
        "torch_deepcopy_ms": round(_median(tp_copies), 3),
        "session_bytes": mem,
        "torch_prune_bytes": tmem,
        "moves": moves,
        "steps": steps,
        "pruneviz_move_runs_ms": [round(x, 3) for x in pv_moves],
        "pruneviz_step_runs_ms": [round(x, 3) for x in pv_steps],
        "torch_prune_runs_ms": [round(x, 3) for x in tp_moves],
        "check": {
            "sparsity": moves[-1],
            "pruneviz_zeros": pv_zero,
            "torch_zeros": tp_zero,
            "mask_agreement": agree,
            "weights_equal": weights_equal,
        },
    }


# --------------------------------------------------------------------------- report
def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_report(results: dict[str, dict], meta: dict[str, object]) -> None:
    print(
        f"torch {meta['torch']}, torchvision {meta['torchvision']}, {meta['cpu_count']} CPUs, "
        f"torch threads {meta['torch_threads']}, {meta['repeats']} runs per median"
    )
    print(
        "torch_prune_ms times only the prune.global_unstructured call on a fresh deepcopy (not the deepcopy).\n"
    )
    cols = [
        ("model", 9, "s"),
        ("weights", 11, "s"),
        ("pruneviz ms", 12, ".2f"),
        ("+1% step ms", 12, ".2f"),
        ("torch ms", 10, ".1f"),
        ("speedup", 9, ".1f"),
        ("speedup step", 13, ".1f"),
        ("mem x", 7, ".3f"),
        ("torch mem x", 12, ".3f"),
        ("init ms", 9, ".0f"),
        ("deepcopy ms", 12, ".1f"),
    ]
    print("".join(f"{c:>{w}}" for c, w, _ in cols))
    for name, r in results.items():
        vals = [
            name,
            f"{r['n_weights'] / 1e6:.2f} M",
            r["pruneviz_ms"],
            r["pruneviz_step_ms"],
            r["torch_prune_ms"],
            r["speedup"],
            r["speedup_step"],
            r["memory_overhead_x"],
            r["torch_prune_memory_x"],
            r["pruneviz_init_ms"],
            r["torch_deepcopy_ms"],
        ]
        print("".join(f"{v:>{w}{f}}" for v, (_, w, f) in zip(vals, cols, strict=True)))
    print(
        "\nmem x = session bytes beyond the model's weights / prunable weight bytes (originals + ranks + "
        "bool masks + biases);\ntorch mem x = (weight_orig + weight_mask + weight + hook mask) / plain weight bytes."
    )
    for name, r in results.items():
        print(
            f"{name}: fastest run (less sensitive to other load): pruneviz {r['pruneviz_min_ms']:.2f} ms, "
            f"+1% step {r['pruneviz_step_min_ms']:.2f} ms, torch {r['torch_prune_min_ms']:.1f} ms"
        )
    for name, r in results.items():
        b, t, c = r["session_bytes"], r["torch_prune_bytes"], r["check"]
        mb = 1 / 2**20
        print(
            f"{name}: session MB: originals {b['originals'] * mb:.1f}, ranks {b['ranks'] * mb:.1f}, "
            f"masks {b['mask_cache'] * mb:.1f}, biases {b['bias_originals'] * mb:.3f}, other {b['other'] * mb:.1f}"
            f" | torch MB: orig {t['orig'] * mb:.1f}, mask {t['mask'] * mb:.1f}, weight {t['weight'] * mb:.1f}, "
            f"hooks {t['hooks'] * mb:.1f} | weights {r['weight_bytes'] * mb:.1f} MB"
        )
        print(
            f"{name}: check at sparsity {c['sparsity']}: zeros pruneviz {c['pruneviz_zeros']} / torch "
            f"{c['torch_zeros']}, mask agreement {c['mask_agreement']:.6f}, weights equal {c['weights_equal']}"
        )

    print("\nTargets:")
    print(f"{'model':>9}{'metric':>22}{'value':>10}{'target':>10}{'result':>8}")
    for name, r in results.items():
        for metric, op, limit in TARGETS[name]:
            value = r[metric]
            ok = value <= limit if op == "<=" else value >= limit
            print(f"{name:>9}{metric:>22}{value:>10.3f}{op + ' ' + f'{limit:g}':>10}{_pf(ok):>8}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="ResNet-18 only, 3 runs per median")
    ap.add_argument("--repeats", type=int, default=None, help="runs per median (default 7, --quick: 3)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads(N) (default: torch's own)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    models = ["resnet18"] if args.quick else list(MODELS)

    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads_arg": args.threads,
        "quick": args.quick,
        "repeats": repeats,
        "seed": args.seed,
        "timing": "median of `repeats` runs after one untimed warm-up; torch_prune_ms times only the "
        "prune.global_unstructured call, not the copy.deepcopy of the template",
        "targets": {
            "resnet18_pruneviz_ms_max": TARGET_UPDATE_MS,
            "resnet18_speedup_min": TARGET_SPEEDUP,
            "memory_overhead_x_max": TARGET_MEMORY_X,
        },
    }
    results = {name: bench_model(name, repeats, args.seed) for name in models}
    print_report(results, meta)

    write_json(args.json, {"meta": meta, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
