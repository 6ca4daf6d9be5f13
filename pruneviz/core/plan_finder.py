"""A per-layer plan from a budget: the most pruning whose *measured* metric stays within a tolerance.

1. A sensitivity sweep (each layer alone, :func:`~pruneviz.core.sensitivity.sensitivity_sweep`) and its
   suggestion (:meth:`SensitivityResult.suggest`: per layer the highest level that alone loses at most the
   tolerance) give the start. Layers interact, so the combined plan usually loses more.
2. Measure the combined plan on a private copy of the model. While it loses more than the tolerance, back off
   (one level down) the layer that costs most: the largest sweep drop per unit of objective (weights or FLOPs)
   its last step bought. Once it holds, push (one level up) the layer whose next step costs least per unit of
   objective; a push that breaks the tolerance is undone and that layer is not pushed again.
3. Stop when nothing can be pushed, at the time budget, at ``max_iterations`` or on cancel. The answer is the
   best measured plan within the tolerance, an ordinary :class:`~pruneviz.core.plan.Plan`:
   ``session.apply_plan(result.plan)`` applies it (and ``session.undo()`` goes back).

The session itself is only read: the search prunes its own copy of the dense model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .criteria import Criterion
from .errors import PrunevizError
from .finetune import Cancel, ProgressFn, is_cancelled, torch_threads
from .plan import Plan
from .race import dense_copy
from .race_tasks import sparse_flops
from .sensitivity import DEFAULT_LEVELS, SensitivityResult, sensitivity_sweep
from .session import PruningSession
from .stats import count_flops
from .sweep_tasks import make_evaluator

OBJECTIVES: tuple[str, ...] = ("params", "flops")


class PlanSearchError(PrunevizError):
    """Bad input to :func:`find_plan`."""


@dataclass(frozen=True)
class PlanIteration:
    """One measured plan: what changed (``action`` "start", "back off", "push" or "undo push" of ``layer``),
    the per-layer sparsities, the measured headline metric and its drop from the unpruned model (positive =
    worse), whether it is within the tolerance, and what it prunes."""

    index: int
    action: str
    layer: str | None
    sparsity: dict[str, float]
    value: float
    drop: float
    feasible: bool
    weights_removed: float
    params_nonzero: int
    flops: int | None
    elapsed: float


@dataclass
class PlanResult:
    """The plan found (``plan``; the dense plan when no pruned plan held), every iteration, and why it stopped
    (``stopped``: "converged", "time budget", "max iterations" or "cancelled")."""

    plan: Plan
    iterations: list[PlanIteration]
    metric: str
    baseline: float
    tolerance: float
    objective: str
    higher_is_better: bool
    stopped: str
    elapsed: float
    sweep: SensitivityResult | None = None
    best_index: int | None = None
    levels: tuple[float, ...] = field(default_factory=tuple)

    @property
    def best(self) -> PlanIteration | None:
        """The iteration whose plan was returned (None when none held)."""
        return None if self.best_index is None else self.iterations[self.best_index]

    @property
    def feasible(self) -> bool:
        return self.best_index is not None


def _check(tolerance: Any, objective: Any, time_budget_s: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise PlanSearchError(f"tolerance must be a number >= 0 in the metric's units (0.01 = one accuracy point), "
                              f"got {tolerance!r}.")
    if objective not in OBJECTIVES:
        raise PlanSearchError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.")
    if isinstance(time_budget_s, bool) or not isinstance(time_budget_s, int | float) or not time_budget_s > 0:
        raise PlanSearchError(f"time_budget_s must be a positive number of seconds, got {time_budget_s!r}.")
    return float(tolerance)


def find_plan(
    session: PruningSession,
    data: Any,
    *,
    tolerance: float,
    objective: str = "params",
    time_budget_s: float = 60,
    progress: ProgressFn | None = None,
    cancel: Cancel = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    criterion: str | Criterion | None = None,
    scope: str | None = None,
    evaluator_kwargs: Mapping[str, Any] | None = None,
    executor: Any = "inline",
    max_iterations: int = 100,
) -> PlanResult:
    """Search a per-layer plan that loses at most ``tolerance`` of the headline metric (absolute: 0.01 = one
    accuracy point) and prunes as many weights (``objective="params"``) or FLOPs ("flops") as it can.

    ``levels``: the sparsities each layer moves between (plus 0); ``criterion``: default the session's;
    ``scope``: "layer" (default; "structured" if the session is) or "structured" (channel ratios);
    ``evaluator_kwargs`` go to the evaluator (``subset_size``, ...); ``executor`` runs the sweep (see
    :func:`sensitivity_sweep`). ``progress(done, total, info)``: ``info["phase"]`` is "sweep" or "search" and,
    in the search, ``info["iteration"]`` the :class:`PlanIteration` just measured.
    """
    t0 = time.perf_counter()
    tol = _check(tolerance, objective, time_budget_s)
    scope = scope or ("structured" if session.plan.scope == "structured" else "layer")
    if scope not in ("layer", "structured"):
        raise PlanSearchError(f"a plan gives each layer its own sparsity: scope must be 'layer' or 'structured', "
                              f"not {scope!r}.")
    crit = session.criterion(criterion) if isinstance(criterion, str) or criterion is None else criterion
    deadline = t0 + float(time_budget_s)

    def stop() -> bool:
        return is_cancelled(cancel) or time.perf_counter() > deadline

    def sweep_progress(done: int, total: int, info: dict[str, Any]) -> None:
        if progress is not None:
            progress(done, total, {**info, "phase": "sweep"})

    sweep = sensitivity_sweep(session, data, levels=levels, criterion=crit, executor=executor, scope=scope,
                              evaluator_kwargs=evaluator_kwargs, progress=sweep_progress, cancel=stop)
    grid = (0.0, *sweep.levels)
    start = sweep.suggest(tol)
    layers = [n for n in sweep.done_layers if n not in sweep.skipped]

    model, info = dense_copy(session)
    work = PruningSession(model, criterion=crit, scope=scope, include=info["include"], calib_data=info["calib"],
                          loss_fn=info["loss_fn"], seed=session.seed, task=info["task"], protect=info["protect"])
    ekw = {"first_chunk": 512, "chunk_size": 512, **dict(evaluator_kwargs or {})}
    with torch_threads(1):
        ev = make_evaluator(model, {"samples": data, "eval_kwargs": ekw, "task": info["task"],
                                    "loss_fn": info["loss_fn"]})
    hib = sweep.higher_is_better
    metric = sweep.metric
    base = ev.baseline.value if ev.baseline.value is not None and metric == ev.task.metric else _metric_of(
        ev.baseline, metric)
    flops = _flops(model, ev, objective)
    weight = {n: float(flops[1].get(work.target(n).module_name, 0) if objective == "flops" else work.target(n).numel)
              for n in layers}
    drops = _drop_table(sweep, layers, grid)

    iterations: list[PlanIteration] = []
    measured: dict[tuple[int, ...], bool] = {}
    level = {n: max((i for i, v in enumerate(grid) if v <= start.get(n, 0.0) + 1e-12), default=0) for n in layers}

    def measure(action: str, layer: str | None) -> PlanIteration:
        sp = {n: grid[level[n]] for n in layers}
        work.apply_plan(Plan(work.plan.criterion, scope, {**dict.fromkeys(work.names, 0.0), **sp}), record=False)
        with torch_threads(1):
            r = ev.evaluate(model)
        value = r.value if r.value is not None and metric == ev.task.metric else _metric_of(r, metric)
        drop = (base - value) if hib else (value - base)
        summ = work.summary()
        it = PlanIteration(len(iterations), action, layer, sp, value, drop, drop <= tol + 1e-12, summ.sparsity,
                           summ.nonzero_params, None if flops is None else sparse_flops(work, *flops),
                           time.perf_counter() - t0)
        iterations.append(it)
        measured[tuple(level[n] for n in layers)] = it.feasible
        if progress is not None:
            progress(len(iterations), max_iterations, {"phase": "search", "iteration": it,
                                                       "elapsed": it.elapsed, "eta": None})
        return it

    def gain(it: PlanIteration) -> float:
        return sum(weight[n] * v for n, v in it.sparsity.items())

    best: PlanIteration | None = None
    stopped = "converged"
    blocked: set[str] = set()
    cur = measure("start", None) if layers and not stop() else None
    while cur is not None:
        if cur.feasible and (best is None or gain(cur) > gain(best)):
            best = cur
        if len(iterations) >= max_iterations:
            stopped = "max iterations"
            break
        if stop():
            stopped = "cancelled" if is_cancelled(cancel) else "time budget"
            break
        if not cur.feasible:
            layer = _costliest(layers, level, drops, weight, grid)
            if layer is None:
                break
            level[layer] -= 1
            cur = measure("back off", layer)
            continue
        layer = _cheapest(layers, level, drops, weight, blocked, grid, measured)
        if layer is None:
            break
        level[layer] += 1
        trial = measure("push", layer)
        if trial.feasible:
            cur = trial
            continue
        level[layer] -= 1
        blocked.add(layer)
        iterations.append(PlanIteration(len(iterations), "undo push", layer, dict(cur.sparsity), cur.value, cur.drop,
                                        True, cur.weights_removed, cur.params_nonzero, cur.flops,
                                        time.perf_counter() - t0))
    if sweep.cancelled and stopped == "converged":
        stopped = "cancelled" if is_cancelled(cancel) else "time budget"
    final = dict.fromkeys(session.names, 0.0)
    if best is not None:
        final.update(best.sparsity)
    return PlanResult(
        plan=Plan(work.plan.criterion, scope, final, 0.0), iterations=iterations, metric=metric, baseline=base,
        tolerance=tol, objective=objective, higher_is_better=hib, stopped=stopped,
        elapsed=time.perf_counter() - t0, sweep=sweep, best_index=None if best is None else best.index,
        levels=grid,
    )


def _metric_of(r: Any, metric: str) -> float:
    from .sweep_tasks import metrics_of

    return metrics_of(r)[metric]


def _flops(model: Any, ev: Any, objective: str) -> tuple[int, dict[str, int]] | None:
    try:
        return count_flops(model, ev.example_input(1))
    except Exception as e:  # noqa: BLE001 - FLOPs are needed only for the FLOPs objective
        if objective == "flops":
            raise PlanSearchError(f"objective 'flops' needs the model's FLOPs, which cannot be counted here "
                                  f"({type(e).__name__}: {e}); use objective='params'.") from e
        return None


def _drop_table(sweep: SensitivityResult, layers: list[str], grid: tuple[float, ...]) -> dict[str, list[float]]:
    """Per layer the sweep's drop at each grid level (0 at level 0), made non-decreasing."""
    table = {n: [0.0] * len(grid) for n in layers}
    index = {v: i for i, v in enumerate(grid)}
    for r in sweep.rows:
        if r.layer in table and r.sparsity in index:
            table[r.layer][index[r.sparsity]] = max(0.0, sweep.drop(r))
    for n in layers:
        for i in range(1, len(grid)):
            table[n][i] = max(table[n][i], table[n][i - 1])
    return table


def _step_cost(drops: list[float], k: int, weight: float, grid: tuple[float, ...]) -> float:
    """Sweep drop per unit of objective of going from level k-1 to level k."""
    return (drops[k] - drops[k - 1]) / max(weight * (grid[k] - grid[k - 1]), 1e-12)


def _costliest(layers: list[str], level: dict[str, int], drops: dict[str, list[float]],
               weight: dict[str, float], grid: tuple[float, ...]) -> str | None:
    """The pruned layer whose last step costs most (ties: the larger total drop, then the more pruned)."""
    cands = [n for n in layers if level[n] > 0]
    if not cands:
        return None
    return max(cands, key=lambda n: (_step_cost(drops[n], level[n], weight[n], grid), drops[n][level[n]], level[n]))


def _cheapest(layers: list[str], level: dict[str, int], drops: dict[str, list[float]], weight: dict[str, float],
              blocked: set[str], grid: tuple[float, ...], measured: dict[tuple[int, ...], bool]) -> str | None:
    """The layer whose next step costs least per unit of objective, skipping blocked layers and plans already
    measured to break the tolerance."""
    best, best_key = None, None
    for i, n in enumerate(layers):
        if n in blocked or level[n] + 1 >= len(grid) or weight[n] <= 0:
            continue
        state = tuple(level[m] + (1 if j == i else 0) for j, m in enumerate(layers))
        if measured.get(state) is False:
            continue
        key = (_step_cost(drops[n], level[n] + 1, weight[n], grid), -weight[n])
        if best_key is None or key < best_key:
            best, best_key = n, key
    return best
