"""Tasks: classification, detection, regression and custom, behind one small interface (see ``base.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..batches import Batch, describe, take_range
from ..errors import EvaluationError, suggest
from .base import Accumulator, LossFn, MetricFn, OutputSpec, Task, call_model, pick_output
from .classification import ClassificationTask
from .custom import CustomTask
from .detection import DetectionTask
from .regression import RegressionTask

#: task names ``Evaluator(task=...)`` and ``pv.explore(task=...)`` take ("auto" picks from the data)
TASKS: tuple[str, ...] = ("auto", "classification", "detection", "regression", "custom")
_BY_NAME: dict[str, type[Task]] = {"classification": ClassificationTask, "detection": DetectionTask,
                                   "regression": RegressionTask, "custom": CustomTask}

__all__ = [
    "TASKS", "Accumulator", "ClassificationTask", "CustomTask", "DetectionTask", "LossFn", "MetricFn",
    "OutputSpec", "RegressionTask", "Task", "call_model", "make_task", "pick_output", "resolve_task",
    "task_for_batch",
]


def make_task(spec: str | Task, *, output: OutputSpec = None, loss_fn: LossFn | None = None,
              metric_fn: MetricFn | None = None) -> Task | None:
    """A task object from a name (None for "auto": it is picked once outputs and targets are known)."""
    if isinstance(spec, Task):
        return spec
    if not isinstance(spec, str) or spec not in TASKS:
        raise EvaluationError(f"unknown task {spec!r}: choose one of {', '.join(TASKS)}, or pass a Task object."
                              + suggest(str(spec), TASKS))
    if spec == "auto":
        return None
    return _BY_NAME[spec](output=output, loss_fn=loss_fn, metric_fn=metric_fn)


def resolve_task(spec: str | Task, raw_probe: Any, targets: Any, *, output: OutputSpec = None,
                 loss_fn: LossFn | None = None, metric_fn: MetricFn | None = None) -> Task:
    """The task for ``spec``; "auto" looks at what the model returned on two samples and at the targets:
    (N, C) scores + integer labels -> classification; box dicts -> detection; else custom with a metric_fn."""
    task = make_task(spec, output=output, loss_fn=loss_fn, metric_fn=metric_fn)
    if task is not None:
        return task
    first = targets[:2] if isinstance(targets, list) else targets
    if DetectionTask.recognises(pick_output(raw_probe, output), first):
        return DetectionTask(output=output, loss_fn=loss_fn, metric_fn=metric_fn)
    probe = pick_output(raw_probe, output)
    if ClassificationTask.recognises(probe, targets):
        return ClassificationTask(output=output, loss_fn=loss_fn, metric_fn=metric_fn)
    if metric_fn is not None or loss_fn is not None:
        return CustomTask(output=output, loss_fn=loss_fn, metric_fn=metric_fn)
    if isinstance(probe, tuple) and probe and ClassificationTask.recognises(probe[0], targets):
        raise EvaluationError(
            f"the model returns a tuple ({describe(probe)}) for integer labels: pass output=0 to read its first "
            "element as the class scores (e.g. an RNN that returns (output, hidden)).")
    raise EvaluationError(
        f"nothing to measure: the model returns {describe(probe)} for targets {describe(targets)}, which is not "
        "classification (that needs (N, classes) outputs and integer labels of shape (N,)) nor detection (one "
        "dict of boxes, scores and labels per image, for targets with boxes and labels). Pass task='regression', "
        "or task='custom' with a metric_fn and/or a loss_fn."
    )


def task_for_batch(spec: str | Task | None, model: nn.Module, batch: Batch, *, output: OutputSpec = None,
                   loss_fn: LossFn | None = None) -> Task:
    """The task for training or calibrating on ``batch``: ``spec`` itself, or (None / "auto") picked from what
    the model returns for the batch's first two samples (eval mode, no gradients; modes restored)."""
    if spec is not None and spec != "auto":
        task = make_task(spec, output=output, loss_fn=loss_fn)
        assert task is not None
        return task
    inputs, targets = batch
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            raw = call_model(model, take_range(inputs, 0, 2))
    except Exception as e:  # noqa: BLE001 - a batch that does not fit the model
        raise EvaluationError(
            f"the model cannot run on a batch of inputs {describe(inputs)}: {type(e).__name__}: {str(e)[:300]}"
        ) from e
    finally:
        for m, training in modes:
            m.training = training
    return resolve_task("auto", raw, take_range(targets, 0, 2), output=output, loss_fn=loss_fn)
