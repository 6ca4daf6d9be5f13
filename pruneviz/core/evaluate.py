"""Evaluator: a fixed stratified evaluation subset, evaluated progressively chunk by chunk, through a task.

Every answer is computed on the same subset with the same chunk boundaries, so a progressive run's final
answer equals :meth:`Evaluator.evaluate` exactly, and answers for different weights are comparable. What a
batch is and how outputs become metrics is the task's business (:mod:`pruneviz.core.tasks`); the subset, the
chunks, the model's modes and the errors are the evaluator's.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .batches import Samples, as_samples, describe, take_range
from .diagnose import diagnose
from .errors import EvaluationError
from .results import EvalResult, wilson_interval
from .tasks import TASKS, LossFn, MetricFn, OutputSpec, Task, call_model, make_task, resolve_task

__all__ = ["TASKS", "EvalResult", "Evaluator", "stratified_order", "wilson_interval"]

#: ``forward(chunk_index, inputs)`` -> what the model returns for that chunk
Forward = Callable[[int, Any], Any]


def _save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule's train/eval flag, so mixed modes (e.g. a frozen BatchNorm) are restored exactly."""
    return [(m, m.training) for m in model.modules()]


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for m, training in modes:
        m.training = training


def stratified_order(y: Any, size: int | None, seed: int) -> torch.Tensor:
    """Indices of a seeded subset of ``size`` samples with the class proportions of ``y``, interleaved so
    that every prefix is itself close to stratified (a good first chunk). Targets that are not one integer
    label per sample (boxes, values) give a seeded random subset."""
    n = len(y)
    g = np.random.default_rng(seed)
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
        idx = g.permutation(n)
        return torch.as_tensor(idx[: size or n])
    labels = y.numpy()
    classes, counts = np.unique(labels, return_counts=True)
    size = min(size or n, n)
    quota = np.floor(counts / n * size).astype(int)
    for c in np.argsort(-(counts / n * size - quota))[: size - quota.sum()]:
        quota[c] += 1
    picked = []
    for c, q in zip(classes, quota, strict=True):
        members = g.permutation(np.flatnonzero(labels == c))[:q]
        # spread each class evenly over [0, 1) so any prefix holds every class in proportion
        keys = (np.arange(q) + g.random()) / max(q, 1)
        picked.append(np.stack([keys, members]))
    allp = np.concatenate(picked, axis=1)
    order = allp[1, np.argsort(allp[0], kind="stable")].astype(np.int64)
    return torch.as_tensor(order)


def _check_finite_inputs(inputs: Any) -> None:
    """NaN or inf in float inputs (a table with missing values) is named, with the rows and columns."""
    if isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        bad = ~torch.isfinite(inputs)
        rows = bad.reshape(len(inputs), -1).any(1).nonzero().flatten()
        cols = bad.any(0).nonzero().flatten().tolist() if inputs.dim() == 2 else []
        where = f" in columns {cols[:8]}{' ...' if len(cols) > 8 else ''}" if cols else ""
        raise EvaluationError(
            f"the evaluation inputs contain NaN or inf: {len(rows)} of {len(inputs)} samples{where} (the first: "
            f"sample {int(rows[0])}). Drop or fill them first (e.g. with the column's training mean).")


class Evaluator:
    """Evaluate a model on a fixed stratified subset of ``data``, progressively, through a task.

    ``data``: (inputs, targets) tensors or arrays, a Dataset, a DataLoader or a list of (inputs, targets)
    batches; inputs may be dicts or tuples of tensors (see :mod:`pruneviz.core.batches`). ``subset_size``:
    samples kept (all by default). ``first_chunk`` samples give the first estimate; later chunks have
    ``chunk_size`` samples. ``task``: "auto" (classification or detection, from the outputs and targets),
    "classification", "detection", "regression", "custom" or a :class:`~pruneviz.core.tasks.Task`.
    ``metric_fn(outputs, targets)`` adds your own metric (float or dict; the headline of task "custom");
    ``loss_fn(outputs, targets)`` replaces the task's loss; ``output`` picks what the task reads from the model's
    return value (an index, a key or a function; e.g. ``output=0`` for an RNN returning (output, hidden)).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        subset_size: int | None = None,
        first_chunk: int = 128,
        chunk_size: int = 256,
        seed: int = 0,
        task: str | Task = "auto",
        loss_fn: LossFn | None = None,
        metric_fn: MetricFn | None = None,
        output: OutputSpec = None,
        defer_baseline: bool = False,
    ) -> None:
        if isinstance(task, Task):
            task = copy.copy(task)  # the evaluator keeps its baseline in its task: one task object each
        else:
            make_task(task)  # an unknown name fails here, before any work
        if subset_size is not None and (
            isinstance(subset_size, bool) or not isinstance(subset_size, int | np.integer) or subset_size < 1
        ):
            raise EvaluationError(
                f"subset_size={subset_size!r}: pass a positive number of samples (or None for all)."
            )
        if not isinstance(model, nn.Module):
            raise EvaluationError(f"the model is a {type(model).__name__}, not a torch.nn.Module.")
        samples = data if isinstance(data, Samples) else as_samples(data)
        _check_finite_inputs(samples.inputs)
        self.seed = seed
        self.order = stratified_order(samples.targets, subset_size, seed)
        with torch.inference_mode():
            raw = self._probe(model, take_range(samples.inputs, 0, 2))
        self.task: Task = resolve_task(task, raw, samples.targets, output=output, loss_fn=loss_fn,
                                       metric_fn=metric_fn)
        # the task checks every sample (errors name the sample's index in the data as given), then the subset
        self.samples = self.task.bind(self.task.pick(raw), samples, model).subset(self.order)
        self.total = self.task.total = len(self.samples)
        self.bounds = self._chunk_bounds(self.total, first_chunk, chunk_size)
        self.chunks = [self.samples.chunk(a, b) for a, b in self.bounds]
        self._baseline: EvalResult | None = None
        self._baseline_error: Exception | None = None
        # ``defer_baseline``: the caller measures the unpruned model later with measure_baseline (the live
        # evaluator's worker does, so a big model's explorer opens before its first full forward)
        self._baseline_done = threading.Event() if defer_baseline else None
        if not defer_baseline:
            self.measure_baseline(model)

    @property
    def baseline(self) -> EvalResult:
        """The unpruned model's result (measured at creation, or waited for when measured in the background)."""
        if self._baseline is None and self._baseline_done is not None:
            self._baseline_done.wait()
        if self._baseline is None:
            raise EvaluationError(f"the unpruned model could not be evaluated: {self._baseline_error}. Fix the "
                                  "cause (see the first message) and open a new explorer.")
        return self._baseline

    @property
    def baseline_ready(self) -> bool:
        """True once :attr:`baseline` is known (reading it then does not wait)."""
        return self._baseline is not None

    def measure_baseline(self, model: nn.Module) -> EvalResult:
        """Evaluate ``model`` (the unpruned one) as the baseline every later result is compared with."""
        try:
            result = self.evaluate(model)
        except Exception as e:
            self._baseline_error = e
            if self._baseline_done is not None:
                self._baseline_done.set()  # a reader waiting for it gets the error instead of waiting forever
            raise
        self._baseline = self.task.baseline = result
        if self._baseline_done is not None:
            self._baseline_done.set()
        return result

    # ------------------------------------------------------------------ reading
    @property
    def classification(self) -> bool:
        return self.task.name == "classification"

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    @property
    def metric_fn(self) -> MetricFn | None:
        return self.task.metric_fn

    @property
    def loss_fn(self) -> LossFn | None:
        return self.task.loss_fn

    @property
    def x(self) -> Any:
        """The subset's inputs as one batched structure (a tensor for plain (x, y) data)."""
        return self.samples.inputs

    @property
    def y(self) -> Any:
        """The subset's targets (class indices for classification, box dicts for detection)."""
        return self.samples.targets

    def example_input(self, n: int = 1) -> Any:
        """The inputs of the first ``n`` subset samples (e.g. for counting FLOPs)."""
        return take_range(self.samples.inputs, 0, n)

    @staticmethod
    def _chunk_bounds(total: int, first: int, size: int) -> list[tuple[int, int]]:
        bounds, start = [], 0
        step = max(1, min(first, total))
        while start < total:
            bounds.append((start, min(total, start + step)))
            start += step
            step = max(1, size)
        return bounds

    def _probe(self, model: nn.Module, inputs: Any) -> Any:
        modes = _save_modes(model)
        model.eval()
        try:
            return call_model(model, inputs)
        except Exception as e:  # noqa: BLE001 - shown to the user as a data/model mismatch
            if isinstance(inputs, torch.Tensor):
                what = f"inputs of shape {tuple(inputs.shape[1:])}, dtype {inputs.dtype}"
            else:
                what = f"inputs {describe(inputs)}"
            hint = diagnose(model, inputs, e) if not isinstance(e, EvaluationError) else ""
            raise EvaluationError(
                f"the model cannot run on the evaluation data ({what}): "
                + (f"{hint} (torch said: {type(e).__name__}: {str(e)[:200]})" if hint
                   else f"{type(e).__name__}: {str(e)[:300]}")
            ) from e
        finally:
            _restore_modes(modes)

    # --------------------------------------------------------------- running
    def run(self, forward: Forward | nn.Module) -> Iterator[EvalResult]:
        """Yield an :class:`EvalResult` after each chunk; ``forward(chunk_index, inputs)`` gives what the model
        returns (or pass a model). The model is put in eval mode and restored afterwards."""
        model = forward if isinstance(forward, nn.Module) else None
        modes = _save_modes(model) if model is not None else []
        if model is not None:
            model.eval()
        fwd: Forward = (lambda i, xb: call_model(model, xb)) if model is not None else forward  # type: ignore[assignment]
        task = self.task
        t0 = time.perf_counter()
        acc = task.accumulator()
        try:
            for i, ((_, b), (inputs, targets)) in enumerate(zip(self.bounds, self.chunks, strict=True)):
                with torch.inference_mode():
                    try:
                        out = fwd(i, inputs)
                    except Exception as e:  # noqa: BLE001 - reported as an evaluation error
                        raise EvaluationError(
                            f"the model raised during evaluation: {type(e).__name__}: {e}"
                        ) from e
                    acc.add(task.pick(out), targets)
                yield acc.result(b, time.perf_counter() - t0)
        finally:
            _restore_modes(modes)

    def evaluate(self, model: nn.Module | Forward) -> EvalResult:
        """The final result of a plain synchronous run."""
        *_, last = self.run(model)
        return last
