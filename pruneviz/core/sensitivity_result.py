"""The table a sensitivity sweep returns: rows, pivot for heatmaps, per-layer suggestions, CSV export."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PrunevizError
from .files import atomic_write

#: Columns of :meth:`SensitivityResult.to_csv`.
CSV_COLUMNS: tuple[str, ...] = ("layer", "sparsity", "metric", "delta", "accuracy", "loss", "pruned", "size")


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
