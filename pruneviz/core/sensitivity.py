"""Sensitivity analysis: prune one layer at a time over a range of sparsities and measure a metric.

The classic procedure (Li et al. 2017): every other layer stays dense (``others="dense"``, the
default), so each curve shows what that layer alone tolerates. ``others="current"`` instead keeps the
other layers at the session's current plan (the curve then answers "how much more can this layer take
given what is pruned now"); the baseline is then the current pruned model.

Work fans out through any ``concurrent.futures.Executor``: one task per layer (all levels). Each task
gets a pickled copy of the model and the evaluation tensors, builds its own :class:`PruningSession`
on its own copy (same targets, criterion and seed, so the masks are exactly those the session would
make) and runs single-threaded, so a local process pool, a Dask ``client.get_executor()`` and
``executor="inline"`` give bit-identical tables. The session itself is only read, never changed.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import csv
import glob
import io
import math
import multiprocessing as mp
import os
import pickle
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .criteria import CRITERIA, Criterion
from .errors import PrunevizError
from .evaluate import EvalResult, Evaluator, _to_tensors, stratified_order
from .files import atomic_write
from .finetune import Cancel, ProgressFn, ProgressReporter, is_cancelled, torch_threads
from .masks import check_sparsity
from .session import PruningSession
from .targets import get_tensor

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
OTHERS: tuple[str, ...] = ("dense", "current")
#: Metrics where lower is better (a *rise* is a drop in quality).
LOWER_IS_BETTER: tuple[str, ...] = ("loss",)
#: Criteria whose scores for a layer depend on that layer alone: a task's session then holds just that layer
#: (ranking every layer of a big model in every task would cost more than the evaluations).
LOCAL_CRITERIA: frozenset[str] = frozenset({"magnitude", "l1_filter", "l2_filter"})
CSV_COLUMNS: tuple[str, ...] = ("layer", "sparsity", "metric", "delta", "accuracy", "loss", "pruned", "size")


class SweepError(PrunevizError):
    """A sensitivity task failed (the message names the layer and the worker's error)."""


@dataclass(frozen=True)
class SensitivityRow:
    """One measurement: ``layer`` pruned to ``sparsity`` (structured: ratio of channels removed).

    ``metric`` is the chosen metric's value, ``delta`` = metric - baseline; ``pruned`` of ``size`` units
    (weights, or channels in structured scope) were pruned.
    """

    layer: str
    sparsity: float
    metric: float
    delta: float
    accuracy: float | None
    loss: float | None
    pruned: int
    size: int


@dataclass
class SensitivityResult:
    """A tidy table of :class:`SensitivityRow` (layer order, then level order) and how it was made."""

    rows: list[SensitivityRow]
    metric: str
    baseline: float
    levels: tuple[float, ...]
    layers: tuple[str, ...]
    criterion: str
    scope: str
    others: str = "dense"
    higher_is_better: bool = True
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    elapsed: float = 0.0

    @property
    def done_layers(self) -> list[str]:
        """Layers with measurements, in the requested order."""
        have = {r.layer for r in self.rows}
        return [n for n in self.layers if n in have]

    @property
    def complete(self) -> bool:
        """True when every requested layer was measured or skipped (not cancelled part-way)."""
        return not self.cancelled and all(n in self.skipped or n in self.done_layers for n in self.layers)

    def drop(self, row: SensitivityRow) -> float:
        """How much worse than the baseline ``row`` is (positive = worse), whatever the metric's direction."""
        return -row.delta if self.higher_is_better else row.delta

    def pivot(self, value: str = "metric") -> tuple[list[str], list[float], np.ndarray]:
        """(layers, levels, matrix[layer, level]) of ``value`` ("metric", "delta", "drop", "accuracy",
        "loss"), NaN where nothing was measured: ready for a heatmap."""
        if value not in ("metric", "delta", "drop", "accuracy", "loss"):
            raise PrunevizError(f"unknown pivot value {value!r}; choose metric, delta, drop, accuracy or loss.")
        layers = self.done_layers
        levels = list(self.levels)
        mat = np.full((len(layers), len(levels)), np.nan)
        li = {n: i for i, n in enumerate(layers)}
        vi = {v: j for j, v in enumerate(levels)}
        for r in self.rows:
            v = self.drop(r) if value == "drop" else getattr(r, value)
            mat[li[r.layer], vi[r.sparsity]] = np.nan if v is None else v
        return layers, levels, mat

    def suggest(self, max_drop: float = 0.01) -> dict[str, float]:
        """Per-layer sparsity: the highest level such that it and every lower level lose at most
        ``max_drop`` of the metric (absolute, e.g. 0.01 = one accuracy point); 0.0 when even the lowest
        level loses more, and for skipped layers. In structured scope the values are channel ratios."""
        if not (isinstance(max_drop, int | float) and math.isfinite(max_drop) and max_drop >= 0):
            raise PrunevizError(f"max_drop must be a number >= 0, got {max_drop!r}.")
        by_layer: dict[str, list[SensitivityRow]] = {}
        for r in self.rows:
            by_layer.setdefault(r.layer, []).append(r)
        out: dict[str, float] = {}
        for name in self.layers:
            if name in self.skipped:
                out[name] = 0.0
                continue
            if name not in by_layer:
                continue
            best = 0.0
            for r in sorted(by_layer[name], key=lambda r: r.sparsity):
                if self.drop(r) > max_drop + 1e-12:
                    break
                best = r.sparsity
            out[name] = best
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (atomically), with a header; ``metric`` is ``self.metric``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in self.rows:
            w.writerow([r.layer, repr(r.sparsity), repr(r.metric), repr(r.delta),
                        "" if r.accuracy is None else repr(r.accuracy),
                        "" if r.loss is None else repr(r.loss), r.pruned, r.size])
        payload = buf.getvalue().encode()
        return atomic_write(path, lambda f: f.write(payload))


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class _Task:
    """One layer over all levels (``layer=None``: unused). Picklable."""

    layer: str
    levels: tuple[float, ...]
    scope: str
    criterion: str | Criterion
    seed: int
    include: tuple[str, ...]
    originals: dict[str, torch.Tensor] | None = None  # "current" mode: the layer's original weight and channel tensors


#: Payloads installed once per worker process by the default pool's initializer (token -> pickled bytes).
_INSTALLED: dict[str, bytes] = {}


def _install(token: str, blob: bytes) -> None:
    _INSTALLED.clear()
    _INSTALLED[token] = blob


@dataclass
class _Payload:
    """The model, evaluation tensors and settings shared by every task: pickled once for pools.

    ``obj``: in-process (inline); ``blob``: shipped with every task (any executor); ``token``: installed
    in each worker of the default pool once, so tasks do not carry the model again.
    """

    blob: bytes | None = None
    obj: dict[str, Any] | None = None
    token: str | None = None

    def load(self) -> dict[str, Any]:
        if self.token is not None:
            return pickle.loads(_INSTALLED[self.token])
        if self.blob is not None:
            return pickle.loads(self.blob)
        assert self.obj is not None
        return {**self.obj, "model": copy.deepcopy(self.obj["model"])}


def _metrics(r: EvalResult) -> dict[str, float]:
    out = {"accuracy": r.accuracy, "loss": r.loss, "top5": r.top5, **r.custom}
    return {k: float(v) for k, v in out.items() if v is not None}


def _evaluator(model: nn.Module, data: Mapping[str, Any]) -> Evaluator:
    return Evaluator(model, (data["x"], data["y"]), **data["eval_kwargs"])


def _run_task(payload: _Payload, task: _Task, cancel: Cancel = None,
              on_level: Callable[[], None] | None = None) -> dict[str, Any]:
    """Sweep one layer; runs in a worker (or inline). Returns plain data: rows or a skip reason."""
    with torch_threads(1):
        data = payload.load()
        model: nn.Module = data["model"]
        with torch.no_grad():
            for name, value in (task.originals or {}).items():
                get_tensor(model, name).copy_(value)
        session = PruningSession(
            model, criterion=task.criterion, scope=task.scope, include=list(task.include),
            calib_data=data["calib"], loss_fn=data["loss_fn"], seed=task.seed,
        )
        if not session.supported(task.layer):
            return {"layer": task.layer, "rows": [], "skipped": f"criterion cannot score {task.layer}"}
        ev = _evaluator(model, data)
        t = session.target(task.layer)
        size = t.channels if task.scope == "structured" else t.numel
        rows = []
        for v in task.levels:
            if is_cancelled(cancel):
                break
            session.set_sparsity(task.layer, v)
            pruned = session.zeros(task.layer) // (t.channel_size if task.scope == "structured" else 1)
            rows.append((v, pruned, size, _metrics(ev.evaluate(model))))
            if on_level is not None:
                on_level()
        return {"layer": task.layer, "rows": rows, "skipped": None}


def _default_context() -> mp.context.BaseContext:
    """forkserver (a clean single-threaded server forks the workers; torch preloaded once) where
    available, else spawn. Plain fork is unsafe with torch's threads."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "pruneviz.core.sensitivity"])
        return ctx
    return mp.get_context("spawn")


# --------------------------------------------------------------------------- the sweep
def _calib(session: PruningSession, crit_needs_data: bool) -> tuple[list | None, Any]:
    """The session's calibration batches (materialised) and loss, shipped only for gradient criteria."""
    if not crit_needs_data or not session.has_calib_data:
        return None, None
    return session.calibration()


def _criterion_spec(session: PruningSession, criterion: str | Criterion | None) -> str | Criterion:
    if isinstance(criterion, Criterion):
        return criterion
    name = criterion if criterion is not None else session.plan.criterion
    if name in CRITERIA:
        return name
    try:
        return session.criterion(name)  # e.g. a Criterion instance the session was given
    except PrunevizError:
        raise PrunevizError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}.") from None


def _layer_tensors(session: PruningSession, name: str) -> list[str]:
    """The weight ``name`` and the tensors the session zeroes with its channels (bias, BatchNorm affine)."""
    return [name, *session.channel_tensors(name)]


def _base_model(session: PruningSession, others: str) -> nn.Module:
    """A copy of the session's model: all originals ("dense") or the current pruned weights ("current")."""
    with session.lock, torch.no_grad():
        model = copy.deepcopy(session.model)
        if others == "dense":
            for n in session.names:
                for x in _layer_tensors(session, n):
                    get_tensor(model, x).copy_(session.original_tensor(x))
    return model.eval()


def sensitivity_sweep(
    session: PruningSession,
    data: Any,
    levels: Sequence[float] = DEFAULT_LEVELS,
    layers: Sequence[str] | None = None,
    criterion: str | Criterion | None = None,
    metric: str = "accuracy",
    executor: cf.Executor | str | None = None,
    progress: ProgressFn | None = None,
    cancel: Cancel = None,
    evaluator_kwargs: Mapping[str, Any] | None = None,
    *,
    others: str = "dense",
    scope: str | None = None,
    max_workers: int | None = None,
    higher_is_better: bool | None = None,
) -> SensitivityResult:
    """Prune each layer alone to each level and measure ``metric`` on ``data``; the session is not changed.

    ``layers``: default every target (in structured scope all but the output layer). ``criterion``:
    default the session's. ``scope``: "layer" (fraction of weights) or "structured" (fraction of output
    channels); default structured if the session is, else layer. ``metric``: "accuracy", "loss", "top5"
    or a key of your ``metric_fn`` (pass it in ``evaluator_kwargs``). ``others``: "dense" or "current"
    (see the module docstring). ``executor``: None (a local process pool, ``max_workers`` processes,
    forkserver/spawn), "inline" (this process, no pool) or any ``concurrent.futures.Executor`` such as a
    Dask ``client.get_executor()``; with a pool the model's class must be importable by the workers.
    ``progress(done, total, info)`` counts evaluations; ``cancel`` (Event or callable) cancels the
    pending tasks and returns the layers finished so far with ``cancelled=True`` (tasks already running
    in a caller's executor finish in the background; their results are dropped).
    """
    t0 = time.perf_counter()
    if not (executor is None or executor == "inline" or isinstance(executor, cf.Executor)):
        raise PrunevizError(f"executor must be None, 'inline' or a concurrent.futures.Executor, not {executor!r}.")
    if others not in OTHERS:
        raise PrunevizError(f"others must be one of {', '.join(OTHERS)}, got {others!r}.")
    scope = scope or ("structured" if session.plan.scope == "structured" else "layer")
    if scope not in ("layer", "structured"):
        raise PrunevizError(f"a sweep prunes one layer at a time: scope must be 'layer' or 'structured', not {scope!r}.")
    lv = tuple(sorted({check_sparsity(v, "a sweep level") for v in levels}))
    if not lv:
        raise PrunevizError("levels is empty: pass sparsities such as (0.1, 0.3, 0.5, 0.7, 0.9).")
    if layers is None:
        names = [n for n in session.names if not (scope == "structured" and n == session.output_layer)]
    else:
        names = list(dict.fromkeys(layers))
        for n in names:
            session.target(n)  # raises UnknownLayerError with suggestions
    if not names:
        raise PrunevizError("no layer to sweep.")
    crit = _criterion_spec(session, criterion)
    crit_name = crit.name if isinstance(crit, Criterion) else crit
    needs_data = crit.needs_data if isinstance(crit, Criterion) else crit_name in ("saliency", "taylor")
    calib, loss_fn = _calib(session, needs_data)

    # evaluation tensors: the fixed stratified subset, computed once here and shipped to every task
    ekw = {"first_chunk": 512, "chunk_size": 512, **dict(evaluator_kwargs or {})}
    x, y = _to_tensors(data)
    order = stratified_order(y, ekw.pop("subset_size", None), ekw.get("seed", 0))
    x, y = x[order].contiguous(), y[order].contiguous()
    model = _base_model(session, others)
    shared = {"model": model, "x": x, "y": y, "eval_kwargs": ekw, "calib": calib, "loss_fn": loss_fn}
    with torch_threads(1):
        baseline_metrics = _metrics(_evaluator(model, shared).baseline)
    if metric not in baseline_metrics:
        raise PrunevizError(f"unknown metric {metric!r}; this evaluation gives {', '.join(baseline_metrics)}.")
    hib = (metric not in LOWER_IS_BETTER) if higher_is_better is None else bool(higher_is_better)

    every = tuple(glob.escape(n) for n in session.names)
    local = isinstance(crit, str) and crit in LOCAL_CRITERIA
    tasks = []
    with session.lock:
        for n in names:
            originals = None
            if others == "current":
                originals = {x: session.original_tensor(x).clone() for x in _layer_tensors(session, n)}
            include = (glob.escape(n),) if local else every
            tasks.append(_Task(n, lv, scope, crit, session.seed, include, originals))

    total = len(tasks) * len(lv)
    report = ProgressReporter(progress, total)
    results: dict[str, dict[str, Any]] = {}
    cancelled = False
    if executor == "inline":
        payload = _Payload(obj=shared)
        done = 0

        def on_level() -> None:
            nonlocal done
            done += 1
            report(done, layer=task.layer, phase="sweep")

        for task in tasks:
            if is_cancelled(cancel):
                cancelled = True
                break
            res = _guard(task.layer, _run_task, payload, task, cancel, on_level)
            if len(res["rows"]) < len(lv) and res["skipped"] is None:
                cancelled = True  # stopped between levels: drop the partial layer
                break
            results[task.layer] = res
    else:
        try:
            blob = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - unpicklable models, metric functions, criteria
            raise SweepError(
                f"cannot ship the model and data to worker processes ({type(e).__name__}: {e}); "
                "use executor='inline'."
            ) from e
        own = executor is None
        if own:
            token = uuid.uuid4().hex
            payload = _Payload(token=token)
            pool: cf.Executor = cf.ProcessPoolExecutor(
                max_workers=max(1, min(max_workers or os.cpu_count() or 1, len(tasks))),
                mp_context=_default_context(), initializer=_install, initargs=(token, blob),
            )
        else:
            payload, pool = _Payload(blob=blob), executor
        try:
            results, cancelled = _collect(pool, payload, tasks, cancel, report, len(lv))
        finally:
            if own:
                pool.shutdown(wait=not cancelled, cancel_futures=True)

    rows: list[SensitivityRow] = []
    skipped: dict[str, str] = {}
    base = baseline_metrics[metric]
    for n in names:
        res = results.get(n)
        if res is None:
            continue
        if res["skipped"]:
            skipped[n] = res["skipped"]
        for v, pruned, size, m in res["rows"]:
            rows.append(SensitivityRow(n, v, m[metric], m[metric] - base, m.get("accuracy"), m.get("loss"),
                                       pruned, size))
    return SensitivityResult(
        rows=rows, metric=metric, baseline=base, levels=lv, layers=tuple(names), criterion=crit_name,
        scope=scope, others=others, higher_is_better=hib, baseline_metrics=baseline_metrics,
        skipped=skipped, cancelled=cancelled, elapsed=time.perf_counter() - t0,
    )


def _guard(layer: str, fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except PrunevizError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the layer's name
        raise SweepError(f"sensitivity of layer {layer!r} failed: {type(e).__name__}: {e}") from e


def _collect(pool: cf.Executor, payload: _Payload, tasks: list[_Task], cancel: Cancel,
             report: ProgressReporter, n_levels: int) -> tuple[dict[str, dict[str, Any]], bool]:
    futures = {pool.submit(_run_task, payload, t): t for t in tasks}
    pending = set(futures)
    results: dict[str, dict[str, Any]] = {}
    done_units = 0
    try:
        while pending:
            if is_cancelled(cancel):
                for f in pending:
                    f.cancel()
                return results, True
            finished, pending = cf.wait(pending, timeout=0.05, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                task = futures[f]
                try:
                    res = f.result()
                except cf.CancelledError:
                    return results, True
                except Exception as e:  # noqa: BLE001 - re-raised with the layer's name and a hint
                    raise SweepError(
                        f"sensitivity of layer {task.layer!r} failed in a worker: {type(e).__name__}: {e}. "
                        "If the model's class is defined in a notebook, workers cannot import it: "
                        "use executor='inline' or move the class into a module."
                    ) from e
                results[task.layer] = res
                done_units += n_levels
                report(done_units, layer=task.layer, phase="sweep")
    except BaseException:
        for f in pending:
            f.cancel()
        raise
    return results, False
