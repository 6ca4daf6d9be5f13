"""Classification: (N, classes) outputs, integer labels; accuracy with its Wilson interval, top-5, loss,
per-class accuracy, the confusion matrix, and the samples whose prediction flipped."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batches import Samples, describe
from ..errors import EvaluationError
from ..results import EvalResult, wilson_interval
from .base import Accumulator, LossFn, MetricFn, OutputSpec, Task


def is_label_tensor(y: Any) -> bool:
    return isinstance(y, torch.Tensor) and y.dim() == 1 and not (y.is_floating_point() or y.is_complex())


class ClassificationTask(Task):
    """Top-1 accuracy (the headline), top-5, cross-entropy loss, per class; ``changed`` = flipped predictions."""

    name = "classification"
    metric, metric_label, percent = "accuracy", "Accuracy", True
    per_class_label = "accuracy"

    def __init__(self, *, output: OutputSpec = None, loss_fn: LossFn | None = None,
                 metric_fn: MetricFn | None = None) -> None:
        super().__init__(output=output, loss_fn=loss_fn if loss_fn is not None else F.cross_entropy,
                         metric_fn=metric_fn)

    @staticmethod
    def recognises(probe: Any, targets: Any) -> bool:
        return isinstance(probe, torch.Tensor) and probe.dim() == 2 and is_label_tensor(targets)

    def pick(self, out: Any) -> Any:
        out = super().pick(out)
        if isinstance(out, tuple | list) and self.output is None:
            raise EvaluationError(
                f"the model returned {type(out).__name__}, not a tensor of outputs ({describe(out)}): pass "
                "output=0 to read its first element (e.g. an RNN that returns (output, hidden)), or output=... "
                "to say which part holds the class scores."
            )
        return out

    def bind(self, probe: Any, samples: Samples, model: nn.Module | None = None) -> Samples:
        y = samples.targets
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
            what = f"{y.dtype} labels of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else describe(y)
            raise EvaluationError(
                f"task='classification' needs integer class labels of shape (N,), got {what}: convert them "
                "with y.long(), or pass task='custom' with a metric_fn."
            )
        if not isinstance(probe, torch.Tensor) or probe.dim() != 2:
            raise EvaluationError(
                f"task='classification' needs outputs of shape (N, classes), but the model returns "
                f"{describe(probe)}: pass task='custom' with a metric_fn (and a loss_fn)."
            )
        self.num_classes = int(probe.shape[1])
        y = y.long()  # cross_entropy and bincount need int64 class indices
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.num_classes:
            raise EvaluationError(
                f"labels range from {lo} to {hi}, but the model outputs {self.num_classes} classes: "
                "labels must be class indices 0..C-1 that match the model's output layer."
            )
        self.total = len(y)
        return Samples(samples.inputs, y)

    def accumulator(self) -> Accumulator:
        return _ClassificationAccumulator(self)


class _ClassificationAccumulator(Accumulator):
    def __init__(self, task: ClassificationTask) -> None:
        super().__init__(task)
        c = task.num_classes
        self.correct = 0
        self.top5 = 0
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.preds: list[torch.Tensor] = []

    def add(self, out: Any, y: torch.Tensor) -> None:
        task = self.task
        if not isinstance(out, torch.Tensor):
            raise EvaluationError(f"the model returned {type(out).__name__}, not a tensor of outputs.")
        if out.dim() != 2 or out.shape[0] != len(y) or out.shape[1] != task.num_classes:
            raise EvaluationError(
                f"the model returned outputs of shape {tuple(out.shape)} for {len(y)} samples; expected "
                f"({len(y)}, {task.num_classes})."
            )
        super().add(out, y)
        c = task.num_classes
        pred = out.argmax(dim=1)
        self.correct += int((pred == y).sum())
        if c >= 5:
            self.top5 += int((out.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum())
        self.confusion += np.bincount((y * c + pred).numpy(), minlength=c**2).reshape(c, c)
        self.preds.append(pred)

    def result(self, n: int, elapsed: float) -> EvalResult:
        task = self.task
        kwargs = self.common(n, elapsed)
        preds = torch.cat(self.preds).numpy()
        support = self.confusion.sum(axis=1)
        accuracy = self.correct / n
        ci = wilson_interval(self.correct, n)
        top5 = self.top5 / n if task.num_classes >= 5 else None
        kwargs.update(
            accuracy=accuracy, accuracy_ci=ci, top5=top5, value=accuracy, value_ci=ci,
            per_class=np.divide(np.diag(self.confusion), support, out=np.full(len(support), np.nan),
                                where=support > 0),
            confusion=self.confusion.copy(),
            predictions=preds,
        )
        kwargs["metrics"] = {"accuracy": accuracy, **({"top5": top5} if top5 is not None else {}),
                             **kwargs["metrics"]}
        base = task.baseline
        if base is not None and base.predictions is not None:
            kwargs["changed"] = np.flatnonzero(preds != base.predictions[:n])
        return EvalResult(**kwargs)
