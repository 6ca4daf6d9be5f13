"""What an evaluation answers: :class:`EvalResult`, the same shape for every task."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95 % by default)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # rounding can put a bound a hair on the wrong side of p (e.g. 0.9999999999999999 for p = 1)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclass(frozen=True)
class EvalResult:
    """Metrics over the first ``n`` of ``total`` subset samples (``final`` when n == total).

    Every task fills ``task``, ``metric`` (the headline metric's key), ``value`` (its value), ``value_ci`` (its
    95 % interval, if the task gives one) and ``metrics`` (every scalar metric, headline included).
    ``per_class``: per-class accuracy (classification) or AP@0.5 (detection), NaN where a class has no sample.
    ``changed``: subset indices of the samples whose outcome differs from the unpruned baseline's.
    ``predictions``: per-sample outputs in the task's own form (class indices, per-image box dicts, values).
    The classification fields (``accuracy``, ``accuracy_ci``, ``top5``, ``confusion``) are None for other tasks;
    ``custom`` holds the user's ``metric_fn`` values; ``details`` task-specific extras.
    """

    n: int
    total: int
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    top5: float | None = None
    loss: float | None = None
    per_class: np.ndarray | None = None
    confusion: np.ndarray | None = None
    changed: np.ndarray | None = None
    predictions: Any = None
    custom: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    generation: int = -1
    task: str = "classification"
    metric: str = "accuracy"
    value: float | None = None
    value_ci: tuple[float, float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.n == self.total

    def with_generation(self, generation: int) -> EvalResult:
        return EvalResult(**{**self.__dict__, "generation": generation})
