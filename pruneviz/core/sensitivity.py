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
import glob
import os
import pickle
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .batches import as_samples
from .criteria import CRITERIA, Criterion, get_criterion
from .errors import PrunevizError
from .evaluate import stratified_order
from .finetune import Cancel, ProgressFn, ProgressReporter, is_cancelled, torch_threads
from .masks import check_sparsity
from .sensitivity_result import SensitivityResult, SensitivityRow
from .session import PruningSession
from .sweep_tasks import (
    Payload,
    Task,
    default_mp_context,
    install_payload,
    make_evaluator,
    metrics_of,
    run_task,
)
from .targets import get_tensor

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
OTHERS: tuple[str, ...] = ("dense", "current")
#: Metrics where lower is better (a *rise* is a drop in quality).
LOWER_IS_BETTER: tuple[str, ...] = ("loss",)
#: Criteria whose scores for a layer depend on that layer alone: a task's session then holds just that layer
#: (ranking every layer of a big model in every task would cost more than the evaluations).
LOCAL_CRITERIA: frozenset[str] = frozenset({"magnitude", "l1_filter", "l2_filter"})


class SweepError(PrunevizError):
    """A sensitivity task failed (the message names the layer and the worker's error)."""


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
    metric: str | None = None,
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
    channels); default structured if the session is, else layer. ``metric``: default the task's headline
    (accuracy, mAP@0.5 as "map50", R² as "r2"), or "loss", "top5", "map" or a key of your ``metric_fn`` (pass it in ``evaluator_kwargs``). ``others``: "dense" or "current"
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
        names = [n for n in session.names if not (scope == "structured" and n in session.output_layers)]
    else:
        names = list(dict.fromkeys(layers))
        for n in names:
            session.target(n)  # raises UnknownLayerError with suggestions
    if not names:
        raise PrunevizError("no layer to sweep.")
    crit = _criterion_spec(session, criterion)
    crit_name = crit.name if isinstance(crit, Criterion) else crit
    needs_data = crit.needs_data if isinstance(crit, Criterion) else get_criterion(crit_name).needs_data
    calib, loss_fn = _calib(session, needs_data)

    # evaluation tensors: the fixed stratified subset, computed once here and shipped to every task
    ekw = {"first_chunk": 512, "chunk_size": 512, **dict(evaluator_kwargs or {})}
    samples = as_samples(data)
    samples = samples.subset(stratified_order(samples.targets, ekw.pop("subset_size", None), ekw.get("seed", 0)))
    model = _base_model(session, others)
    shared = {"model": model, "samples": samples, "eval_kwargs": ekw, "calib": calib, "loss_fn": loss_fn,
              "task": session.task}
    with torch_threads(1):
        base_ev = make_evaluator(model, shared)
    baseline_metrics = metrics_of(base_ev.baseline)
    if metric is None:
        metric = base_ev.task.metric if base_ev.task.metric in baseline_metrics else next(iter(baseline_metrics))
    if metric not in baseline_metrics:
        raise PrunevizError(f"unknown metric {metric!r}; this evaluation gives {', '.join(baseline_metrics)}.")
    if higher_is_better is None:
        hib = base_ev.task.higher_is_better if metric == base_ev.task.metric else metric not in LOWER_IS_BETTER
    else:
        hib = bool(higher_is_better)

    every = tuple(glob.escape(n) for n in session.names)
    local = isinstance(crit, str) and crit in LOCAL_CRITERIA
    tasks = []
    with session.lock:
        for n in names:
            originals = None
            if others == "current":
                originals = {x: session.original_tensor(x).clone() for x in _layer_tensors(session, n)}
            include = (glob.escape(n),) if local else every
            tasks.append(Task(n, lv, scope, crit, session.seed, include, originals))

    total = len(tasks) * len(lv)
    report = ProgressReporter(progress, total)
    results: dict[str, dict[str, Any]] = {}
    cancelled = False
    if executor == "inline":
        payload = Payload(obj=shared)
        done = 0

        def on_level() -> None:
            nonlocal done
            done += 1
            report(done, layer=task.layer, phase="sweep")

        for task in tasks:
            if is_cancelled(cancel):
                cancelled = True
                break
            res = _guard(task.layer, run_task, payload, task, cancel, on_level)
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
            payload = Payload(token=token)
            pool: cf.Executor = cf.ProcessPoolExecutor(
                max_workers=max(1, min(max_workers or os.cpu_count() or 1, len(tasks))),
                mp_context=default_mp_context(), initializer=install_payload, initargs=(token, blob),
            )
        else:
            payload, pool = Payload(blob=blob), executor
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


def _collect(pool: cf.Executor, payload: Payload, tasks: list[Task], cancel: Cancel,
             report: ProgressReporter, n_levels: int) -> tuple[dict[str, dict[str, Any]], bool]:
    futures = {pool.submit(run_task, payload, t): t for t in tasks}
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
