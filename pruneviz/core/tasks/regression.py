"""Regression (tabular models and the like): R² (the headline), MSE and MAE; ``changed`` = the samples whose
prediction moved by more than a tenth of the targets' standard deviation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batches import Samples, describe
from ..errors import EvaluationError
from ..results import EvalResult
from .base import Accumulator, LossFn, MetricFn, OutputSpec, Task

#: a prediction that moves by more than this many target standard deviations counts as changed
CHANGE_STD = 0.1


class RegressionTask(Task):
    """Outputs and targets of the same number of values per sample (``(N,)`` and ``(N, 1)`` pair up)."""

    name = "regression"
    metric, metric_label, percent = "r2", "R²", False
    higher_is_better = True

    def __init__(self, *, output: OutputSpec = None, loss_fn: LossFn | None = None,
                 metric_fn: MetricFn | None = None) -> None:
        super().__init__(output=output, loss_fn=loss_fn if loss_fn is not None else _mse, metric_fn=metric_fn)
        self.target_std = 1.0

    def bind(self, probe: Any, samples: Samples, model: nn.Module | None = None) -> Samples:
        y = samples.targets
        if not isinstance(y, torch.Tensor) or y.is_complex():
            raise EvaluationError(f"task='regression' needs numeric targets in a tensor, got {describe(y)}.")
        if not isinstance(probe, torch.Tensor):
            raise EvaluationError(
                f"task='regression' needs the model to return a tensor, not {describe(probe)}: pass output=... to "
                "pick it.")
        per_out = probe[0].numel() if probe.dim() else 1
        per_y = y[0].numel() if y.dim() else 1
        if per_out != per_y:
            raise EvaluationError(
                f"the model returns {per_out} value(s) per sample ({describe(probe)}) but the targets have "
                f"{per_y} ({describe(y)}): they must match one to one.")
        y = y.float()
        if not torch.isfinite(y).all():
            raise EvaluationError("the regression targets contain NaN or inf: drop or fill those rows first.")
        self.target_std = float(y.std()) if len(y) > 1 else 1.0
        self.total = len(y)
        return Samples(samples.inputs, y)

    def accumulator(self) -> Accumulator:
        return _RegressionAccumulator(self)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out.reshape(y.shape).float(), y.float())


class _RegressionAccumulator(Accumulator):
    def __init__(self, task: RegressionTask) -> None:
        super().__init__(task)
        self.sse = 0.0
        self.sae = 0.0
        self.sum_y = 0.0
        self.sum_y2 = 0.0
        self.count = 0
        self.preds: list[np.ndarray] = []

    def add(self, out: Any, y: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.numel() != y.numel():
            raise EvaluationError(
                f"the model returned {describe(out)} for targets {describe(y)}; expected one value per target.")
        super().add(out, y)
        o = out.reshape(y.shape).double()
        yd = y.double()
        err = o - yd
        self.sse += float((err * err).sum())
        self.sae += float(err.abs().sum())
        self.sum_y += float(yd.sum())
        self.sum_y2 += float((yd * yd).sum())
        self.count += y.numel()
        self.preds.append(o.reshape(len(y), -1).float().numpy())

    def result(self, n: int, elapsed: float) -> EvalResult:
        kwargs = self.common(n, elapsed)
        m = max(self.count, 1)
        mse, mae = self.sse / m, self.sae / m
        sst = self.sum_y2 - self.sum_y * self.sum_y / m
        r2 = 1.0 - self.sse / sst if sst > 0 else 0.0
        preds = np.concatenate(self.preds)
        kwargs.update(value=r2, predictions=preds, metrics={"r2": r2, "mse": mse, "mae": mae, **kwargs["metrics"]})
        base = self.task.baseline
        if base is not None and base.predictions is not None:
            moved = np.abs(preds - base.predictions[:n]).max(axis=1)
            kwargs["changed"] = np.flatnonzero(moved > CHANGE_STD * self.task.target_std)
        return EvalResult(**kwargs)
