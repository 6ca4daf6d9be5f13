"""The task seam: what a batch is, how outputs become metrics chunk by chunk, what "changed" means.

A :class:`Task` is small: ``pick`` turns what the model returned into the outputs the task reads (logits out
of a Hugging Face output, element ``output`` of a tuple), ``bind`` checks the outputs and targets against
each other once, ``accumulator`` sums up chunks into an :class:`~pruneviz.core.results.EvalResult`, and
``loss`` is the training loss (fine-tuning, the gradient criteria). Nothing else in pruneviz knows which task
it is: the evaluator, the live loop and the views ask the task.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..batches import Batch, Samples, concat, describe
from ..errors import EvaluationError
from ..results import EvalResult

MetricFn = Callable[[Any, Any], "float | Mapping[str, float]"]
LossFn = Callable[[Any, Any], torch.Tensor]
#: ``output``: which part of what the model returns the task reads: an index, a key, or a function.
OutputSpec = int | str | Callable[[Any], Any] | None


def _wants_kwargs(model: nn.Module, keys: list[str]) -> bool:
    """Whether a dict input should be spread as keyword arguments (``model(**d)``): its keys are all
    parameters of ``forward`` and ``forward`` does not take the dict as one argument."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    names = [p for p, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    if any(v.kind == v.VAR_KEYWORD for v in params.values()) and len(names) != 1:
        return True
    return bool(keys) and all(k in names for k in keys) and not (len(names) == 1 and names[0] not in keys)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Run ``model`` on a batch's inputs: a tensor or list as one argument, a tuple as positional arguments,
    a dict as keyword arguments when its keys name ``forward``'s parameters (else as one argument)."""
    if isinstance(inputs, tuple):
        return model(*inputs)
    if isinstance(inputs, Mapping) and _wants_kwargs(model, [str(k) for k in inputs]):
        return model(**inputs)
    return model(inputs)


def pick_output(out: Any, output: OutputSpec) -> Any:
    """The part ``output`` of a model's return value (index, key or function); None: as it is, or the
    ``logits`` of a dict-like (Hugging Face) output."""
    if output is None:
        if not isinstance(out, torch.Tensor | list):
            logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
            if isinstance(logits, torch.Tensor):
                return logits
        return out
    try:
        if callable(output):
            return output(out)
        return out[output]
    except Exception as e:  # noqa: BLE001 - a selector that does not fit what the model returns
        raise EvaluationError(
            f"output={output!r} does not fit what the model returns ({describe(out)}): {type(e).__name__}: {e}."
        ) from e


def custom_metric(fn: MetricFn, outputs: Any, targets: Any) -> dict[str, float]:
    """``fn(outputs, targets)`` as a dict of finite floats, with a clear error for anything else."""
    try:
        value = fn(outputs, targets)
    except Exception as e:  # noqa: BLE001 - reported as an evaluation error
        raise EvaluationError(f"your metric_fn raised {type(e).__name__}: {e}") from e
    values = dict(value) if isinstance(value, Mapping) else {"metric": value}
    out = {}
    for k, v in values.items():
        try:
            v = float(v)
        except (TypeError, ValueError, RuntimeError) as e:
            raise EvaluationError(
                f"your metric_fn returned {k}={v!r:.100}, which is not a number: return a float or a dict "
                "of floats."
            ) from e
        if not math.isfinite(v):
            raise EvaluationError(f"your metric_fn returned {k}={v}: metrics must be finite numbers.")
        out[str(k)] = v
    return out


class Accumulator:
    """Running sums over chunks; ``result(n, elapsed)`` turns them into an :class:`EvalResult`.

    The base class keeps the loss sum (with the task's ``loss_fn``) and the outputs a ``metric_fn`` needs.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.loss_sum = 0.0
        self.outputs: list[Any] = []
        self.targets: list[Any] = []

    def add(self, out: Any, targets: Any) -> None:
        task = self.task
        if task.loss_fn is not None:
            try:
                loss = task.loss_fn(out, targets)  # a mean over the chunk, or per-sample values
                n = len(targets)
                self.loss_sum += float(loss.sum()) if loss.dim() else float(loss) * n
            except Exception as e:  # noqa: BLE001 - reported as an evaluation error
                raise EvaluationError(
                    f"the loss function raised {type(e).__name__} on outputs {_shape(out)} and "
                    f"targets {_shape(targets)}: {str(e)[:300]}"
                ) from e
        if task.metric_fn is not None:
            self.outputs.append(out.detach().clone() if isinstance(out, torch.Tensor) else out)
            self.targets.append(targets)

    def common(self, n: int, elapsed: float) -> dict[str, Any]:
        """The fields every task's result has: n, total, elapsed, task, loss and the custom metric."""
        task = self.task
        kwargs: dict[str, Any] = {"n": n, "total": task.total, "elapsed": elapsed, "task": task.name,
                                  "metric": task.metric}
        metrics: dict[str, float] = {}
        if task.loss_fn is not None:
            kwargs["loss"] = self.loss_sum / n
            if not math.isfinite(kwargs["loss"]):
                raise EvaluationError(
                    f"the loss is {kwargs['loss']} (NaN/inf): the model's outputs are not finite."
                )
            metrics["loss"] = kwargs["loss"]
        if task.metric_fn is not None:
            kwargs["custom"] = custom_metric(task.metric_fn, concat(self.outputs, "the outputs"),
                                             concat(self.targets, "the targets"))
            metrics.update(kwargs["custom"])
        kwargs["metrics"] = metrics
        return kwargs

    def result(self, n: int, elapsed: float) -> EvalResult:
        raise NotImplementedError


def _shape(x: Any) -> str:
    """'of shape (128, 10)' for a tensor (the wording users know), else the structure."""
    if isinstance(x, torch.Tensor):
        return f"of shape {tuple(x.shape)}" + (f" ({x.dtype})" if not x.is_floating_point() else "")
    return describe(x)


class Task:
    """Base class of the tasks. Subclasses set the class attributes and override ``bind``/``accumulator``.

    ``output``: which part of the model's return value to read (see :func:`pick_output`); ``loss_fn(outputs,
    targets)``: the loss (evaluated alongside, and used for training); ``metric_fn(outputs, targets)``: your
    own metric(s), computed on all outputs so far at every chunk.
    """

    name: ClassVar[str] = "task"
    #: the headline metric: its key in ``EvalResult.metrics``, its label, whether it is a fraction shown in %
    metric: str = "metric"
    metric_label: str = "metric"
    percent: bool = False
    higher_is_better: bool = True
    #: what ``EvalResult.per_class`` holds ("" when the task has no classes)
    per_class_label: ClassVar[str] = ""

    def __init__(self, *, output: OutputSpec = None, loss_fn: LossFn | None = None,
                 metric_fn: MetricFn | None = None) -> None:
        self.output = output
        self.loss_fn = loss_fn
        self.metric_fn = metric_fn
        self.total = 0
        self.num_classes = 0
        self.baseline: EvalResult | None = None

    # ----------------------------------------------------------------- running the model
    def pick(self, out: Any) -> Any:
        """What the model returned -> the outputs this task reads."""
        return pick_output(out, self.output)

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        """Run ``model`` on a batch's inputs and pick its outputs."""
        return self.pick(call_model(model, inputs))

    def bind(self, probe: Any, samples: Samples, model: nn.Module | None = None) -> Samples:
        """Check the model's outputs on two samples (``probe``, picked) against the targets; set what the task
        needs to know (e.g. the number of classes); return the samples (targets converted if needed)."""
        self.total = len(samples)
        return samples

    def accumulator(self) -> Accumulator:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The training loss of one (inputs, targets) batch (fine-tuning, the gradient criteria)."""
        if self.loss_fn is None:
            raise EvaluationError(
                f"the {self.name} task has no loss to train with: pass loss_fn=lambda outputs, targets: ...")
        inputs, targets = batch
        return self.loss_fn(self.forward(model, inputs), targets)

    def loss_and_outputs(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
        """The training loss of a batch and the outputs it came from (None when the task's loss does not go
        through the outputs, as a detector's loss dict does)."""
        inputs, targets = batch
        if self.loss_fn is None:
            return self.loss(model, batch), None
        out = self.forward(model, inputs)
        return self.loss_fn(out, targets), out

    # ----------------------------------------------------------------- showing it
    def fmt(self, value: float | None) -> str:
        """The headline metric as people read it: '97.2 %' or '0.912'."""
        if value is None:
            return "–"
        return f"{100 * value:.1f} %" if self.percent else f"{value:.3g}"

    def fmt_delta(self, value: float, base: float) -> str:
        """The change against the baseline: '-0.4 points' or '-0.012'."""
        d = value - base
        return f"{100 * d:+.1f} points" if self.percent else f"{d:+.3g}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
