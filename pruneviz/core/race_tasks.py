"""The worker side of the criterion race: one task = one (criterion, scope, seed) over every sparsity.

A task builds its own :class:`PruningSession` on its own copy of the dense model (masks are ranked once, then
every sparsity is one compare), evaluates on one thread, and returns plain data. The shared payload (model,
evaluation samples, calibration batches) travels as in the sensitivity sweep (:mod:`.sweep_tasks`), so an
in-process run, a local process pool and a Dask executor give bit-identical rows.

Per process, two caches keep repeated work out of the loop: the evaluator of each seed (its subset and
baseline) and the FLOPs of the physically slimmed model, keyed by the per-layer count of removed channels
(the FLOPs of a Conv/Linear chain depend on how many channels go, not on which).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .criteria import Criterion
from .evaluate import Evaluator
from .finetune import Cancel, is_cancelled, torch_threads
from .session import PruningSession
from .stats import count_flops
from .sweep_tasks import Payload, default_mp_context, make_evaluator, metrics_of

#: Criteria whose masks do not depend on the seed (only "random" does, and custom criteria may).
DETERMINISTIC: frozenset[str] = frozenset(
    {"magnitude", "saliency", "taylor", "l1_filter", "l2_filter", "bn_scale", "lamp", "wanda"})


@dataclass(frozen=True)
class RaceTask:
    """One (criterion, scope, seed) over ``sparsities``. ``eval_seed``: the seed of the evaluation subset."""

    index: int
    criterion: str | Criterion
    scope: str
    seed: int
    eval_seed: int
    sparsities: tuple[float, ...]


_EVALUATORS: OrderedDict[tuple[str, int], Evaluator] = OrderedDict()
_SLIM: OrderedDict[tuple[str, tuple], tuple[int, int, tuple[str, ...]]] = OrderedDict()
_DENSE: OrderedDict[str, tuple[int, dict[str, int]]] = OrderedDict()
_MAX_CACHED = 64
_LOCK = threading.Lock()


def _cached(cache: OrderedDict, key: Any, make: Callable[[], Any], limit: int = _MAX_CACHED) -> Any:
    """``cache[key]``, made with ``make()`` when missing (least recently used entries evicted beyond ``limit``).
    Thread-safe: races may run in several threads of one process (a view's background race and a script's)."""
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()  # not under the lock: a FLOP count or an evaluator takes a while
    with _LOCK:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    return value


def _session(model: nn.Module, data: dict[str, Any], criterion: str | Criterion, scope: str, seed: int
             ) -> PruningSession:
    return PruningSession(model, criterion=criterion, scope=scope, include=data["include"],
                          calib_data=data["calib"], loss_fn=data["loss_fn"], seed=seed, task=data.get("task"),
                          protect=data["protect"])


def _evaluator(data: dict[str, Any], seed: int, model: nn.Module) -> Evaluator:
    kw = {**data["eval_kwargs"], "seed": seed}
    return _cached(_EVALUATORS, (data["token"], seed), lambda: make_evaluator(model, {**data, "eval_kwargs": kw}),
                   limit=8)


def removed_key(session: PruningSession) -> tuple[tuple[str, int], ...]:
    """(layer, channels removed) for every layer pruned by channels: what the slim model's size depends on."""
    out = []
    for n in session.names:
        keep = session.channel_mask(n)
        if keep is not None and not bool(keep.all()):
            out.append((n, int((~keep).sum())))
    return tuple(out)


def slim_counts(session: PruningSession, example: Any, token: str) -> tuple[int, int, tuple[str, ...]]:
    """(FLOPs, parameters, layers kept whole) of ``session``'s model with its pruned channels removed."""
    def count() -> tuple[int, int, tuple[str, ...]]:
        from .flops import slim_copy  # torch-pruning: imported when a structured race first needs it

        slim, kept = slim_copy(session, example)
        return count_flops(slim, example)[0], sum(p.numel() for p in slim.parameters()), tuple(kept)

    return _cached(_SLIM, (token, removed_key(session)), count, limit=4096)


def sparse_flops(session: PruningSession, dense: int, per_module: dict[str, int]) -> int:
    """Dense FLOPs with each pruned layer's share scaled by the fraction of its weights kept (zeros skipped)."""
    total = dense
    shares: dict[str, int] = {}
    for t in session.targets:
        shares[t.module_name] = shares.get(t.module_name, 0) + t.numel
    for t in session.targets:
        layer = per_module.get(t.module_name, 0) * t.numel // max(1, shares[t.module_name])
        total -= int(layer * session.zeros(t.name) / t.numel)
    return total


def dense_flops(model: nn.Module, example: Any, token: str) -> tuple[int, dict[str, int]]:
    """The dense model's FLOPs (total, per module), counted once per race and process."""
    return _cached(_DENSE, token, lambda: count_flops(model, example), limit=4)


def run_race_task(payload: Payload, task: RaceTask, cancel: Cancel = None,
                  on_point: Callable[[], None] | None = None) -> dict[str, Any]:
    """Prune to every sparsity of ``task`` (the global slider of its scope) and measure; plain data back."""
    with torch_threads(1):
        data = payload.load()
        model: nn.Module = data["model"]
        example = data["example"]
        session = _session(model, data, task.criterion, task.scope, task.seed)
        ev = _evaluator(data, task.eval_seed, model)
        flops = dense_flops(model, example, data["token"]) if example is not None else None
        rows = []
        for v in task.sparsities:
            if is_cancelled(cancel):
                break
            session.set_global_sparsity(v)
            r = ev.evaluate(model)
            summ = session.summary()
            row: dict[str, Any] = {
                "sparsity": v, "value": r.value, "metrics": metrics_of(r),
                "params_total": summ.total_params, "prunable": summ.prunable_params, "pruned": summ.pruned_params,
                "layer_sparsity": session.layer_sparsities(),
                "channels_removed": None, "flops_dense": None, "flops_sparse": None, "flops_slim": None,
                "params_slim": None, "kept_whole": (),
            }
            if task.scope == "structured":
                row["channels_removed"] = {n: k for n, k in removed_key(session)}
            if flops is not None:
                row["flops_dense"] = flops[0]
                row["flops_sparse"] = sparse_flops(session, *flops)
                if task.scope == "structured":
                    row["flops_slim"], row["params_slim"], row["kept_whole"] = slim_counts(
                        session, example, data["token"])
            rows.append(row)
            if on_point is not None:
                on_point()
        return {"index": task.index, "rows": rows, "baseline": metrics_of(ev.baseline),
                "baseline_value": ev.baseline.value}


def probe(payload: Payload) -> dict[str, Any]:
    """What the race needs to know before it starts: the task's headline metric, its direction and the
    unpruned result (seed 0), and the dense FLOPs. Runs in the caller's process."""
    with torch_threads(1):
        data = payload.load()
        model = data["model"]
        ev = _evaluator(data, 0, model)
        flops = None
        if data["example"] is not None:
            flops = dense_flops(model, data["example"], data["token"])[0]
        task = ev.task
        return {"metric": task.metric if ev.baseline.value is not None else "loss",
                "label": getattr(task, "metric_label", task.metric), "percent": bool(task.percent),
                "higher_is_better": bool(task.higher_is_better) if ev.baseline.value is not None else False,
                "task": task.name, "total": ev.total, "flops_dense": flops}


def warm_up() -> None:
    """Import what the first FLOP count imports lazily (``torch._dynamo``: ~2 s once per process), so a worker's
    first task is not slower than the others (the process pool's forkserver preloads it; ``pruneviz report
    --scheduler`` runs it on every Dask worker)."""
    import torch._dynamo  # noqa: F401


def mp_context() -> Any:
    """The sweep's start method (:func:`default_mp_context`), its forkserver also preloading this module and
    ``torch._dynamo``."""
    ctx = default_mp_context()
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["torch", "torch._dynamo", "pruneviz.core.sweep_tasks", "pruneviz.core.race_tasks"])
    return ctx


def clear_caches() -> None:
    """Drop the per-process caches (evaluators, FLOPs)."""
    _EVALUATORS.clear()
    _SLIM.clear()
    _DENSE.clear()
