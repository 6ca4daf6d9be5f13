"""The criterion race: every chosen criterion x scope x sparsity x seed on one model and its data.

Each point holds the headline metric (and every metric), parameters left, FLOPs left (dense, zeros skipped,
and with channels removed in structured scope) and the per-layer allocation. Work fans out like the
sensitivity sweep: one task per (criterion, scope, seed), in this process (``executor="inline"``), a local
process pool (``workers=N``) or any ``concurrent.futures.Executor`` (a Dask ``client.get_executor()``); every
task prunes its own copy of the dense model on one thread, so every way gives bit-identical points.

Seeds: ``seed`` reseeds the random criterion; with ``evaluator_kwargs={"subset_size": n}`` (fewer samples
than the data has) it also draws a different stratified evaluation subset per seed. Criteria whose masks do
not depend on the seed, evaluated on the same samples, give the same point for every seed: they are measured
once and their points repeated for each seed (the rows say so: identical values).

A session passed in is only read (its original weights, targets, calibration batches and output head): its
plan, masks and weights are untouched.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import glob
import os
import pickle
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from .batches import Samples, as_batches, as_samples, take_range
from .criteria import CRITERIA, Criterion, find_batchnorms, get_criterion
from .criteria_modern import LAMP, Wanda
from .errors import CriterionError, PrunevizError, suggest
from .finetune import Cancel, ProgressFn, ProgressReporter, is_cancelled
from .masks import check_sparsity
from .plan import SCOPES
from .race_result import MaskSource, RaceError, RacePoint, RaceResult
from .race_tasks import DETERMINISTIC, RaceTask, mp_context, probe, run_race_task
from .session import CALIB_BATCHES, PruningSession
from .sweep_tasks import Payload, install_payload
from .targets import find_targets, get_tensor

__all__ = ["DEFAULT_CRITERIA", "DEFAULT_SPARSITIES", "RaceError", "RaceResult", "criterion_race", "known_criteria"]

DEFAULT_CRITERIA: tuple[str, ...] = ("magnitude", "random", "saliency", "taylor", "l1_filter", "l2_filter",
                                     "bn_scale", "lamp", "wanda")
DEFAULT_SPARSITIES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_MODERN: dict[str, Callable[[], Criterion]] = {"lamp": LAMP, "wanda": Wanda}


def known_criteria() -> tuple[str, ...]:
    """Every criterion name the race accepts (the registry's and LAMP, Wanda)."""
    return tuple(dict.fromkeys([*CRITERIA, *_MODERN]))


def resolve_criterion(spec: str | Criterion) -> tuple[str, str | Criterion]:
    """(name, what a worker builds its session with): a registry name, or a (picklable) Criterion object."""
    if isinstance(spec, Criterion):
        return spec.name, spec
    if not isinstance(spec, str):
        raise CriterionError(f"a criterion is a name such as 'magnitude' or a Criterion object, not {spec!r}.")
    if spec in CRITERIA:
        return spec, spec
    if spec in _MODERN:
        return spec, _MODERN[spec]()
    raise CriterionError(f"unknown criterion {spec!r}; choose among {', '.join(known_criteria())}."
                         + suggest(spec, known_criteria()))


def needs_data(spec: str | Criterion) -> bool:
    """Whether the criterion needs calibration data."""
    return (spec if isinstance(spec, Criterion) else get_criterion(spec)).needs_data


def check_grid(sparsities: Sequence[float], seeds: int | Sequence[int], scopes: Sequence[str]
               ) -> tuple[tuple[float, ...], tuple[int, ...], tuple[str, ...]]:
    """The race's grid, validated: sparsities in [0, 1] (sorted, unique), seeds (a count or a list), scopes."""
    if isinstance(sparsities, int | float):
        sparsities = [sparsities]
    sp = tuple(sorted({check_sparsity(v, "the race's grid") for v in sparsities}))
    if not sp:
        raise RaceError("the sparsity grid is empty: pass values in [0, 1] such as (0.5, 0.75, 0.9).")
    if isinstance(seeds, bool):
        raise RaceError(f"seeds must be a count or a list of whole numbers, not {seeds!r}.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise RaceError(f"seeds={seeds}: the race needs at least one seed (e.g. seeds=3, or seeds=(0, 1, 2)).")
        seeds = range(seeds)
    seed_list = list(dict.fromkeys(seeds))
    if not seed_list:
        raise RaceError("seeds is empty: pass a count (seeds=3) or a list of whole numbers.")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
        raise RaceError(f"seeds must be whole numbers, got {seed_list!r}.")
    if isinstance(scopes, str):
        scopes = [scopes]
    sc = tuple(dict.fromkeys(scopes))
    if not sc:
        raise RaceError("scopes is empty: pass e.g. ('global', 'layer').")
    for s in sc:
        if s not in SCOPES:
            raise RaceError(f"unknown scope {s!r}; choose among {', '.join(SCOPES)}." + suggest(str(s), SCOPES))
    return sp, tuple(seed_list), sc


def dense_copy(source: PruningSession | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of the model at its original weights, and what the tasks' sessions must share with it."""
    if isinstance(source, PruningSession):
        with source.lock:
            model = copy.deepcopy(source.model)
            for n in source.names:
                for x in [n, *source.channel_tensors(n)]:
                    get_tensor(model, x).data.copy_(source.original_tensor(x))
            calib, loss_fn = source.calibration()
            info = {"include": [glob.escape(n) for n in source.names], "protect": list(source.output_layers),
                    "calib": calib, "loss_fn": loss_fn, "task": source.task, "seed": source.seed}
        return model.eval(), info
    if not isinstance(source, nn.Module):
        raise RaceError(f"the race takes a torch.nn.Module or a PruningSession, not {type(source).__name__}.")
    return copy.deepcopy(source).eval(), {"include": None, "protect": None, "calib": None, "loss_fn": None,
                                           "task": None, "seed": 0}


def _output_head(model: nn.Module, samples: Samples) -> list[str] | None:
    from .graph import output_layers

    try:
        return output_layers(model, take_range(samples.inputs, 0, 1), find_targets(model)) or None
    except Exception:  # noqa: BLE001 - the session's default (the last layer) then applies
        return None


def criterion_race(
    session_or_model: PruningSession | nn.Module,
    data: Any,
    *,
    criteria: Sequence[str | Criterion] = DEFAULT_CRITERIA,
    scopes: Sequence[str] = ("global", "layer"),
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    seeds: int | Sequence[int] = (0,),
    executor: cf.Executor | str | None = None,
    calib_data: Any = None,
    progress: ProgressFn | None = None,
    cancel: Cancel = None,
    evaluator_kwargs: Mapping[str, Any] | None = None,
    workers: int | None = None,
    task: Any = None,
    model_name: str | None = None,
) -> RaceResult:
    """Race ``criteria`` on ``data`` over ``scopes`` x ``sparsities`` x ``seeds`` (see the module docstring).

    ``executor``: None or "inline" (this process; with ``workers=N > 1`` a local pool of N processes) or any
    ``concurrent.futures.Executor`` (its workers must import the model's class). ``calib_data``: batches for
    the criteria that need data (saliency, taylor, wanda; default: the session's). ``progress(done, total,
    info)`` counts evaluations (``info`` has elapsed and eta); ``cancel`` (Event or callable) stops early and
    returns the points so far with ``cancelled=True``. ``evaluator_kwargs`` go to the :class:`Evaluator`
    (``subset_size``, ``metric_fn``, ``output``, ...). ``task``: the task (default: the session's, or picked
    from the data).
    """
    t0 = time.perf_counter()
    if not (executor is None or executor == "inline" or isinstance(executor, cf.Executor)):
        raise RaceError(f"executor must be None, 'inline' or a concurrent.futures.Executor, not {executor!r}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise RaceError(f"workers must be a whole number >= 1, got {workers!r}.")
    if isinstance(criteria, str | Criterion):
        criteria = [criteria]
    resolved = [resolve_criterion(c) for c in criteria]
    names = list(dict.fromkeys(n for n, _ in resolved))
    if not names:
        raise RaceError(f"no criteria to race: choose among {', '.join(known_criteria())}.")
    specs = dict(resolved)
    sp, seed_list, scope_list = check_grid(sparsities, seeds, scopes)

    model, info = dense_copy(session_or_model)
    samples = data if isinstance(data, Samples) else as_samples(data)
    if calib_data is not None:
        info["calib"] = as_batches(calib_data, limit=CALIB_BATCHES)
    if task is not None:
        info["task"] = task
    for n in names:
        if needs_data(specs[n]) and info["calib"] is None:
            raise CriterionError(
                f"criterion {n!r} needs calibration data and none was given: pass calib_data=[(inputs, targets), "
                "...] (a few batches), or leave it out of the criteria.")
    if "bn_scale" in names and not find_batchnorms(model, find_targets(model, include=info["include"])):
        raise CriterionError(f"criterion 'bn_scale' needs convolutions followed by BatchNorm and "
                             f"{type(model).__name__} has none: leave it out, or race 'l1_filter' instead.")
    if info["protect"] is None:
        info["protect"] = _output_head(model, samples)

    ekw = {"first_chunk": 512, "chunk_size": 512, **dict(evaluator_kwargs or {})}
    base_seed = int(ekw.pop("seed", 0))
    subset = ekw.get("subset_size")
    resampled = subset is not None and subset < len(samples)
    example = take_range(samples.inputs, 0, 1)
    token = uuid.uuid4().hex
    shared = {"model": model, "samples": samples, "eval_kwargs": ekw, "calib": info["calib"],
              "loss_fn": info["loss_fn"], "task": info["task"], "include": info["include"],
              "protect": info["protect"], "example": example, "token": token}
    meta = probe(Payload(obj=shared))
    if meta["flops_dense"] is None:
        shared["example"] = None

    tasks: list[RaceTask] = []
    replicas: dict[int, list[int]] = {}  # task index -> the seeds it stands for
    for n in names:
        for s in scope_list:
            repeat = n in DETERMINISTIC and not resampled
            for seed in seed_list[:1] if repeat else seed_list:
                idx = len(tasks)
                tasks.append(RaceTask(idx, specs[n], s, seed, seed if resampled else base_seed, sp))
                replicas[idx] = list(seed_list) if repeat else [seed]
    total = len(tasks) * len(sp)
    report = ProgressReporter(progress, total)
    results: dict[int, dict[str, Any]] = {}
    cancelled = False
    if executor in (None, "inline") and (workers or 1) == 1:
        payload, done = Payload(obj=shared), 0
        for t in tasks:
            if is_cancelled(cancel):
                cancelled = True
                break

            def on_point(t: RaceTask = t) -> None:
                nonlocal done
                done += 1
                report(done, criterion=_name(t), scope=t.scope, seed=t.seed, phase="race")

            results[t.index] = _guard(t, run_race_task, payload, t, cancel, on_point)
            cancelled = cancelled or len(results[t.index]["rows"]) < len(sp)
    else:
        results, cancelled = _fan_out(shared, tasks, executor, workers, cancel, report, len(sp))

    rows: list[RacePoint] = []
    baselines: dict[int, float] = {}
    baseline_metrics: dict[int, dict[str, float]] = {}
    metric = meta["metric"]
    for t in tasks:
        res = results.get(t.index)
        if res is None:
            continue
        for seed in replicas[t.index]:
            bval = res["baseline_value"] if res["baseline_value"] is not None else res["baseline"].get(metric)
            baselines.setdefault(seed, bval)
            baseline_metrics.setdefault(seed, res["baseline"])
            for r in res["rows"]:
                value = r["value"] if r["value"] is not None else r["metrics"].get(metric)
                rows.append(RacePoint(
                    _name(t), t.scope, r["sparsity"], seed, metric, value, r["metrics"], r["params_total"],
                    r["prunable"], r["pruned"], r["layer_sparsity"], r["flops_dense"], r["flops_sparse"],
                    r["flops_slim"], r["params_slim"], r["channels_removed"], tuple(r["kept_whole"])))
    order = {n: i for i, n in enumerate(names)}
    sorder = {s: i for i, s in enumerate(scope_list)}
    rows.sort(key=lambda r: (order[r.criterion], sorder[r.scope], r.sparsity, r.seed))

    def make_session(criterion: str, scope: str, seed: int) -> PruningSession:
        return PruningSession(copy.deepcopy(model), criterion=specs.get(criterion, criterion), scope=scope,
                              include=info["include"], calib_data=info["calib"], loss_fn=info["loss_fn"],
                              seed=seed, task=info["task"], protect=info["protect"])

    return RaceResult(
        rows=rows, metric=metric, metric_label=meta["label"], higher_is_better=meta["higher_is_better"],
        percent=meta["percent"], criteria=tuple(names), scopes=scope_list, sparsities=sp, seeds=seed_list,
        baselines=dict(sorted(baselines.items())), baseline_metrics=dict(sorted(baseline_metrics.items())),
        model_name=model_name or type(model).__name__, task=meta["task"],
        layers=tuple(t.name for t in find_targets(model, include=info["include"])), resampled=resampled,
        subset_size=int(subset) if resampled else meta["total"], cancelled=cancelled,
        elapsed=time.perf_counter() - t0, mask_fn=MaskSource(make_session),
    )


def _name(t: RaceTask) -> str:
    return t.criterion.name if isinstance(t.criterion, Criterion) else t.criterion


def _guard(t: RaceTask, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except PrunevizError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the task's name
        raise RaceError(f"the race of {_name(t)!r} ({t.scope} scope, seed {t.seed}) failed: "
                        f"{type(e).__name__}: {e}") from e


def _fan_out(shared: dict[str, Any], tasks: list[RaceTask], executor: cf.Executor | str | None,
             workers: int | None, cancel: Cancel, report: ProgressReporter, n_points: int
             ) -> tuple[dict[int, dict[str, Any]], bool]:
    """Run the tasks in a pool (ours, or the caller's executor); results by task index, and whether cancelled."""
    try:
        blob = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001 - unpicklable models, metric functions, criteria
        raise RaceError(f"cannot ship the model and data to worker processes ({type(e).__name__}: {e}); "
                        "use executor='inline'.") from e
    own = not isinstance(executor, cf.Executor)
    if own:
        token = uuid.uuid4().hex
        payload = Payload(token=token)
        pool: cf.Executor = cf.ProcessPoolExecutor(
            max_workers=max(1, min(workers or os.cpu_count() or 1, len(tasks))), mp_context=mp_context(),
            initializer=install_payload, initargs=(token, blob))
    else:
        payload, pool = Payload(blob=blob), executor  # type: ignore[assignment]
    futures = {pool.submit(run_race_task, payload, t): t for t in tasks}
    pending = set(futures)
    results: dict[int, dict[str, Any]] = {}
    cancelled = False
    finished_ok = False
    try:
        while pending:
            if is_cancelled(cancel):
                cancelled = True
                break
            finished, pending = cf.wait(pending, timeout=0.05, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                t = futures[f]
                try:
                    res = f.result()
                except cf.CancelledError:
                    cancelled = True
                    continue
                except PrunevizError:
                    raise
                except Exception as e:  # noqa: BLE001 - re-raised with the task and a hint
                    raise RaceError(
                        f"the race of {_name(t)!r} ({t.scope} scope, seed {t.seed}) failed in a worker: "
                        f"{type(e).__name__}: {e}. If the model's class is defined in a notebook, workers cannot "
                        "import it: use executor='inline' or move the class into a module.") from e
                results[t.index] = res
                report(len(results) * n_points, criterion=_name(t), scope=t.scope, seed=t.seed, phase="race")
        finished_ok = True
    finally:
        for f in pending:
            f.cancel()
        if own:  # on cancel, an error or Ctrl-C the running tasks are not waited for
            pool.shutdown(wait=finished_ok and not cancelled, cancel_futures=True)
    return results, cancelled
