"""What the criterion race returns: one :class:`RacePoint` per (criterion, scope, sparsity, seed), trade-off
curves (mean and sd over seeds), the gap of every criterion to the random baseline, mask agreement, CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PrunevizError, suggest
from .files import atomic_write

#: x axes of :meth:`RaceResult.curves`: % of prunable weights removed, % of FLOPs removed with zeros skipped,
#: % of FLOPs removed with the pruned channels physically removed (structured scope only).
CURVE_AXES: tuple[str, ...] = ("weights", "flops", "flops_slim")
#: Two-sided 95 % Student-t quantiles by degrees of freedom (normal beyond 30).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


class RaceError(PrunevizError):
    """Bad input to the race, or a question the race's results cannot answer."""


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean with its two-sided 95 % Student-t interval (NaN bounds below 2 values)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _sd(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class RacePoint:
    """One measurement. ``value`` is the headline metric (``metric``), ``metrics`` every scalar metric.

    Parameters count every parameter of the model (``params_total``) and the prunable weights pruned
    (``pruned`` of ``prunable``); FLOPs are per sample: dense, with pruned weights skipped (``flops_sparse``) and,
    in structured scope, of the model with its pruned channels physically removed (``flops_slim``, with its
    parameter count ``params_slim``). None where not counted.
    """

    criterion: str
    scope: str
    sparsity: float
    seed: int
    metric: str
    value: float
    metrics: dict[str, float]
    params_total: int
    prunable: int
    pruned: int
    layer_sparsity: dict[str, float]
    flops_dense: int | None = None
    flops_sparse: int | None = None
    flops_slim: int | None = None
    params_slim: int | None = None
    channels_removed: dict[str, int] | None = None
    kept_whole: tuple[str, ...] = ()

    @property
    def params_nonzero(self) -> int:
        return self.params_total - self.pruned

    @property
    def weights_removed(self) -> float:
        """Fraction of the prunable weights removed."""
        return self.pruned / self.prunable if self.prunable else 0.0

    @property
    def compression(self) -> float:
        """ShrinkBench's compression ratio: parameters / nonzero parameters."""
        return self.params_total / max(self.params_nonzero, 1)

    @property
    def speedup(self) -> float | None:
        """ShrinkBench's theoretical speed-up: FLOPs / FLOPs with zeros skipped."""
        return None if self.flops_dense is None or self.flops_sparse is None else self.flops_dense / max(
            self.flops_sparse, 1)

    @property
    def speedup_slim(self) -> float | None:
        """FLOPs / FLOPs with the pruned channels removed (structured scope)."""
        return None if self.flops_dense is None or self.flops_slim is None else self.flops_dense / max(
            self.flops_slim, 1)

    def x(self, axis: str) -> float | None:
        """The point on a curve's x axis (% removed), see :data:`CURVE_AXES`."""
        if axis == "weights":
            return 100 * self.weights_removed
        if self.flops_dense is None:
            return None
        flops = self.flops_sparse if axis == "flops" else self.flops_slim
        return None if flops is None else 100 * (1 - flops / max(self.flops_dense, 1))


@dataclass(frozen=True)
class Curve:
    """One (criterion, scope) series: per sparsity the mean x and y over seeds, their sd and the seed count."""

    criterion: str
    scope: str
    axis: str
    sparsity: tuple[float, ...]
    x: tuple[float, ...]
    x_sd: tuple[float, ...]
    y: tuple[float, ...]
    y_sd: tuple[float, ...]
    n: tuple[int, ...]


@dataclass(frozen=True)
class Agreement:
    """Jaccard overlap of the *pruned* sets of two criteria at one sparsity: |A ∩ B| / |A ∪ B| per layer and over
    all layers (NaN where neither prunes anything)."""

    a: str
    b: str
    scope: str
    sparsity: float
    seed: int
    per_layer: dict[str, float]
    overall: float
    pruned_a: int
    pruned_b: int


@dataclass(frozen=True)
class Gap:
    """How much better than random a criterion is (positive = better, in the headline metric's units), paired
    by seed (same seed = same evaluation subset). ``mean`` over every (sparsity, seed) pair; ``low``/``high``:
    the 95 % Student-t interval over seeds of each seed's mean gap (NaN with fewer than 2 seeds);
    ``per_sparsity``: (sparsity, mean, low, high, seeds) with the same interval at each sparsity."""

    criterion: str
    scope: str
    metric: str
    mean: float
    low: float
    high: float
    seeds: int
    per_sparsity: tuple[tuple[float, float, float, float, int], ...]
    method: str = "paired by seed; Student-t 95 % interval over seeds"


MaskFn = Callable[[str, str, float, int], dict[str, Any]]


@dataclass
class RaceResult:
    """The race's points (criterion order, scope order, sparsity, seed) and how they were made.

    ``baselines``: the unpruned headline metric per seed (its evaluation subset); ``resampled``: whether
    seeds drew different evaluation subsets.
    """

    rows: list[RacePoint]
    metric: str
    metric_label: str
    higher_is_better: bool
    percent: bool
    criteria: tuple[str, ...]
    scopes: tuple[str, ...]
    sparsities: tuple[float, ...]
    seeds: tuple[int, ...]
    baselines: dict[int, float]
    baseline_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    model_name: str = "model"
    task: str = "classification"
    layers: tuple[str, ...] = ()
    resampled: bool = False
    subset_size: int = 0
    cancelled: bool = False
    elapsed: float = 0.0
    mask_fn: MaskFn | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the mask source (it holds the model): a pickled result cannot answer :meth:`jaccard`."""
        return {**self.__dict__, "mask_fn": None}

    # -------------------------------------------------------------------------------- reading
    def points(self, criterion: str | None = None, scope: str | None = None) -> list[RacePoint]:
        return [r for r in self.rows if (criterion is None or r.criterion == criterion)
                and (scope is None or r.scope == scope)]

    @property
    def baseline(self) -> float:
        """The unpruned headline metric, averaged over the seeds' subsets."""
        vals = list(self.baselines.values())
        return sum(vals) / len(vals) if vals else math.nan

    def _check(self, criterion: str | None = None, scope: str | None = None) -> None:
        if criterion is not None and criterion not in self.criteria:
            raise RaceError(f"criterion {criterion!r} was not in the race; it ran {', '.join(self.criteria)}."
                            + suggest(criterion, self.criteria))
        if scope is not None and scope not in self.scopes:
            raise RaceError(f"scope {scope!r} was not in the race; it ran {', '.join(self.scopes)}.")

    def curves(self, x: str = "weights", metric: str | None = None) -> list[Curve]:
        """One curve per (criterion, scope): the headline metric (or ``metric``) against ``x`` ("weights": %
        of prunable weights removed; "flops": % of FLOPs removed with zeros skipped; "flops_slim": with channels
        removed, structured scope only), mean and sd over seeds at each sparsity."""
        if x not in CURVE_AXES:
            raise RaceError(f"unknown x axis {x!r}; choose one of {', '.join(CURVE_AXES)}." + suggest(x, CURVE_AXES))
        out = []
        for c in self.criteria:
            for s in self.scopes:
                groups: OrderedDict[float, list[RacePoint]] = OrderedDict()
                for r in self.points(c, s):
                    groups.setdefault(r.sparsity, []).append(r)
                cols: list[tuple[float, float, float, float, float, int]] = []
                for sp, pts in groups.items():
                    xs = [r.x(x) for r in pts]
                    ys = [r.value if metric is None else r.metrics.get(metric) for r in pts]
                    if any(v is None for v in xs) or any(v is None for v in ys):
                        continue
                    cols.append((sp, sum(xs) / len(xs), _sd(xs), sum(ys) / len(ys), _sd(ys), len(pts)))
                if cols:
                    sp, xm, xsd, ym, ysd, n = zip(*cols, strict=True)
                    out.append(Curve(c, s, x, sp, xm, xsd, ym, ysd, n))
        return out

    def gap_to_random(self, criterion: str, scope: str | None = None) -> Gap:
        """The gap of ``criterion`` to the random baseline in ``scope`` (default: the race's first scope)."""
        scope = scope or self.scopes[0]
        self._check(criterion, scope)
        if "random" not in self.criteria:
            raise RaceError("the random baseline was not in the race: add 'random' to the criteria.")
        rand = {(r.sparsity, r.seed): r.value for r in self.points("random", scope)}
        sign = 1.0 if self.higher_is_better else -1.0
        by_sp: OrderedDict[float, dict[int, float]] = OrderedDict()
        for r in self.points(criterion, scope):
            if (r.sparsity, r.seed) in rand:
                by_sp.setdefault(r.sparsity, {})[r.seed] = sign * (r.value - rand[(r.sparsity, r.seed)])
        per_sp = tuple((sp, *t_interval(list(d.values())), len(d)) for sp, d in by_sp.items())
        per_seed: dict[int, list[float]] = {}
        for d in by_sp.values():
            for seed, g in d.items():
                per_seed.setdefault(seed, []).append(g)
        every = [g for d in by_sp.values() for g in d.values()]
        _, lo, hi = t_interval([sum(v) / len(v) for v in per_seed.values()])
        mean = sum(every) / len(every) if every else math.nan
        return Gap(criterion, scope, self.metric, mean, lo, hi, len(per_seed), per_sp)  # type: ignore[arg-type]

    def gaps(self) -> list[Gap]:
        """:meth:`gap_to_random` of every criterion but random, in every scope (empty without random)."""
        if "random" not in self.criteria:
            return []
        return [self.gap_to_random(c, s) for s in self.scopes for c in self.criteria if c != "random"]

    def jaccard(self, a: str, b: str, sparsity: float, scope: str | None = None, seed: int | None = None
                ) -> Agreement:
        """Overlap of the weights criteria ``a`` and ``b`` prune at ``sparsity`` (the global slider of ``scope``),
        per layer and overall; masks are recomputed in this process (no evaluation)."""
        scope = scope or self.scopes[0]
        seed = self.seeds[0] if seed is None else seed
        self._check(a, scope)
        self._check(b)
        if self.mask_fn is None:
            raise RaceError("this race result has no model to recompute masks from (it was loaded or pickled).")
        pa, pb = self.mask_fn(a, scope, sparsity, seed), self.mask_fn(b, scope, sparsity, seed)
        per_layer: dict[str, float] = {}
        inter_all = union_all = na = nb = 0
        for name in pa:
            x, y = pa[name], pb[name]
            inter, union = int((x & y).sum()), int((x | y).sum())
            per_layer[name] = inter / union if union else math.nan
            inter_all, union_all = inter_all + inter, union_all + union
            na, nb = na + int(x.sum()), nb + int(y.sum())
        return Agreement(a, b, scope, float(sparsity), seed, per_layer,
                         inter_all / union_all if union_all else math.nan, na, nb)

    # -------------------------------------------------------------------------------- writing
    def metric_keys(self) -> list[str]:
        """Every metric any point has, sorted (the CSV's metric columns)."""
        return sorted({k for r in self.rows for k in r.metrics})

    def to_csv(self, path: str | os.PathLike | None = None, model: str | None = None) -> str | Path:
        """The points as CSV, one row per model x criterion x scope x sparsity x seed (the text, or written
        atomically to ``path``). Floats are written exactly (``repr``), so equal races give equal files."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        keys = self.metric_keys()
        w.writerow(["model", "task", "criterion", "scope", "sparsity", "seed", "metric", "value", "baseline",
                    *keys, "params_total", "params_nonzero", "prunable", "pruned", "weights_removed", "compression",
                    "flops_dense", "flops_sparse", "speedup", "flops_slim", "params_slim", "speedup_slim",
                    "channels_removed", "kept_whole", "layer_sparsity"])

        def num(v: Any) -> str:
            return "" if v is None else repr(v) if isinstance(v, float) else str(v)

        for r in self.rows:
            w.writerow([model or self.model_name, self.task, r.criterion, r.scope, num(r.sparsity), r.seed, r.metric,
                        num(r.value), num(self.baselines.get(r.seed)), *(num(r.metrics.get(k)) for k in keys),
                        r.params_total, r.params_nonzero, r.prunable, r.pruned, num(r.weights_removed),
                        num(r.compression), num(r.flops_dense), num(r.flops_sparse), num(r.speedup),
                        num(r.flops_slim), num(r.params_slim), num(r.speedup_slim),
                        "" if r.channels_removed is None else json.dumps(r.channels_removed),
                        ";".join(r.kept_whole), json.dumps(r.layer_sparsity)])
        text = buf.getvalue()
        if path is None:
            return text
        payload = text.encode()
        return atomic_write(path, lambda f: f.write(payload))


class MaskSource:
    """Recomputes a race's masks in this process: one session per (criterion, scope, seed), on its own copy of
    the dense model, kept for the last few questions. ``make(criterion, scope, seed)`` builds a session."""

    def __init__(self, make: Callable[[str, str, int], Any], limit: int = 4) -> None:
        self.make = make
        self.limit = limit
        self._sessions: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _session(self, criterion: str, scope: str, sparsity: float, seed: int) -> Any:
        key = (criterion, scope, seed)
        s = self._sessions.get(key)
        if s is None:
            s = self._sessions[key] = self.make(criterion, scope, seed)
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        s.set_global_sparsity(sparsity)
        return s

    def __call__(self, criterion: str, scope: str, sparsity: float, seed: int) -> dict[str, Any]:
        """The *pruned* set (True = pruned) of every layer."""
        with self._lock:
            return {n: ~m for n, m in self._session(criterion, scope, sparsity, seed).masks.items()}

    def slim(self, criterion: str, scope: str, sparsity: float, seed: int, example: Any) -> Any:
        """The physically smaller model of that point (structured scope; see :func:`~pruneviz.core.flops.slim_copy`)."""
        from .flops import slim_copy

        with self._lock:
            return slim_copy(self._session(criterion, scope, sparsity, seed), example)[0]
