"""A task measured by the user's own function: ``metric_fn(outputs, targets)`` (and/or a ``loss_fn``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..batches import Samples, describe
from ..errors import EvaluationError
from ..results import EvalResult
from .base import Accumulator, LossFn, MetricFn, OutputSpec, Task


class CustomTask(Task):
    """The headline is the first value ``metric_fn`` returns (or the loss, lower is better, without one).

    ``higher_is_better``: the direction of the headline metric (default True; False for the loss).
    """

    name = "custom"

    def __init__(self, *, output: OutputSpec = None, loss_fn: LossFn | None = None,
                 metric_fn: MetricFn | None = None, higher_is_better: bool | None = None) -> None:
        super().__init__(output=output, loss_fn=loss_fn, metric_fn=metric_fn)
        self.metric = self.metric_label = "loss" if metric_fn is None else "metric"
        self.higher_is_better = metric_fn is not None if higher_is_better is None else bool(higher_is_better)

    def bind(self, probe: Any, samples: Samples, model: nn.Module | None = None) -> Samples:
        if self.loss_fn is None and self.metric_fn is None:
            raise EvaluationError(
                f"nothing to measure: the model returns {describe(probe)} for targets {describe(samples.targets)}, "
                "which is not classification (that needs (N, classes) outputs and integer labels of shape (N,)) "
                "nor detection (lists of dicts with boxes and labels). Pass task='custom' with a metric_fn "
                "and/or a loss_fn, or task='regression'."
            )
        self.total = len(samples)
        return samples

    def accumulator(self) -> Accumulator:
        return _CustomAccumulator(self)


class _CustomAccumulator(Accumulator):
    def result(self, n: int, elapsed: float) -> EvalResult:
        kwargs = self.common(n, elapsed)
        task = self.task
        if task.metric_fn is not None and kwargs.get("custom"):
            first = next(iter(kwargs["custom"]))
            task.metric = task.metric_label = first
            kwargs["metric"], kwargs["value"] = first, kwargs["custom"][first]
        elif kwargs.get("loss") is not None:
            kwargs["value"] = kwargs["loss"]
        return EvalResult(**kwargs)
