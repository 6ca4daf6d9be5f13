"""Evaluator: a fixed stratified evaluation subset, evaluated progressively chunk by chunk.

Every answer is computed on the same subset with the same chunk boundaries, so a progressive run's final
answer equals :meth:`Evaluator.evaluate` exactly, and answers for different weights are comparable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import EvaluationError

MetricFn = Callable[[torch.Tensor, torch.Tensor], "float | Mapping[str, float]"]
Forward = Callable[[int, torch.Tensor], torch.Tensor]


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

    Classification fields are None when the task is not classification; ``custom`` holds the user's metric.
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
    predictions: np.ndarray | None = None
    custom: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    generation: int = -1

    @property
    def final(self) -> bool:
        return self.n == self.total

    def with_generation(self, generation: int) -> EvalResult:
        return EvalResult(**{**self.__dict__, "generation": generation})


def _to_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise (inputs, targets) from tensors, a Dataset or a DataLoader."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(
        isinstance(d, torch.Tensor | np.ndarray) for d in data
    ):
        x, y = (torch.as_tensor(d) for d in data)
    elif isinstance(data, DataLoader | Dataset):
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=512, shuffle=False)
        xs, ys = [], []
        for batch in loader:
            if not isinstance(batch, tuple | list) or len(batch) < 2:
                raise EvaluationError("evaluation data must yield (inputs, targets) pairs.")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise EvaluationError("the evaluation data is empty: pass at least one (input, target) sample.")
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise EvaluationError(
            f"evaluation data of type {type(data).__name__} is not supported: pass (inputs, targets) "
            "tensors, "
            "a torch Dataset or a DataLoader."
        )
    if x.dim() == 0 or y.dim() == 0:
        raise EvaluationError(
            f"inputs of shape {tuple(x.shape)} and targets of shape {tuple(y.shape)}: both need a batch "
            "dimension (one row per sample)."
        )
    if len(x) == 0 or len(y) == 0:
        raise EvaluationError("the evaluation data is empty: pass at least one (input, target) sample.")
    if len(x) != len(y):
        raise EvaluationError(f"{len(x)} inputs but {len(y)} targets: they must pair up one to one.")
    return x, y


TASKS = ("auto", "classification", "custom")


def _save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule's train/eval flag, so mixed modes (e.g. a frozen BatchNorm) are restored exactly."""
    return [(m, m.training) for m in model.modules()]


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for m, training in modes:
        m.training = training


def stratified_order(y: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Indices of a seeded subset of ``size`` samples with the class proportions of ``y``, interleaved so
    that every prefix is itself close to stratified (a good first chunk)."""
    n = len(y)
    g = np.random.default_rng(seed)
    if y.dim() != 1 or y.is_floating_point():
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


class Evaluator:
    """Evaluate a model on a fixed stratified subset of ``data``, progressively.

    ``data``: (inputs, targets) tensors, a Dataset or a DataLoader. ``subset_size``: samples kept (all by
    default). ``first_chunk`` samples give the first estimate; later chunks have ``chunk_size`` samples.
    ``metric_fn(outputs, targets)`` adds your own metric (float or dict); for non-classification tasks pass
    ``task="custom"`` (and a ``loss_fn`` if you want a loss).
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
        task: str = "auto",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        metric_fn: MetricFn | None = None,
    ) -> None:
        if task not in TASKS:
            raise EvaluationError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}.")
        if subset_size is not None and (
            isinstance(subset_size, bool) or not isinstance(subset_size, int | np.integer) or subset_size < 1
        ):
            raise EvaluationError(
                f"subset_size={subset_size!r}: pass a positive number of samples (or None for all)."
            )
        x, y = _to_tensors(data)
        self.seed = seed
        self.order = stratified_order(y, subset_size, seed)
        self.x = x[self.order].contiguous()
        self.y = y[self.order].contiguous()
        self.total = len(self.y)
        self.bounds = self._chunk_bounds(self.total, first_chunk, chunk_size)
        self.metric_fn = metric_fn
        with torch.inference_mode():
            probe = self._probe(model)
        self.classification = task == "classification" or (
            task == "auto" and probe.dim() == 2 and self.y.dim() == 1 and not self.y.is_floating_point()
        )
        if self.classification and (self.y.dim() != 1 or self.y.is_floating_point() or self.y.is_complex()):
            raise EvaluationError(
                f"task='classification' needs integer class labels of shape (N,), got {self.y.dtype} labels "
                f"of shape {tuple(self.y.shape)}: convert them with y.long(), or pass task='custom' with a "
                "metric_fn."
            )
        if self.classification and probe.dim() != 2:
            raise EvaluationError(
                f"task='classification' needs outputs of shape (N, classes), but the model returns shape "
                f"{tuple(probe.shape)}: pass task='custom' with a metric_fn (and a loss_fn)."
            )
        self.loss_fn = loss_fn if loss_fn is not None else (F.cross_entropy if self.classification else None)
        if not self.classification and self.loss_fn is None and metric_fn is None:
            raise EvaluationError(
                f"nothing to measure: the model returns shape {tuple(probe.shape)} for targets of dtype "
                f"{self.y.dtype} and shape {tuple(self.y.shape)}, which is not classification (that needs "
                "(N, classes) outputs and integer labels of shape (N,)). Pass task='custom' with a metric_fn "
                "and/or a loss_fn."
            )
        self.num_classes = int(probe.shape[1]) if self.classification else 0
        if self.classification:
            self.y = self.y.long()  # cross_entropy and bincount need int64 class indices
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= self.num_classes:
                raise EvaluationError(
                    f"labels range from {lo} to {hi}, but the model outputs {self.num_classes} classes: "
                    "labels must be class indices 0..C-1 that match the model's output layer."
                )
        self.baseline: EvalResult = self.evaluate(model)

    @staticmethod
    def _chunk_bounds(total: int, first: int, size: int) -> list[tuple[int, int]]:
        bounds, start = [], 0
        step = max(1, min(first, total))
        while start < total:
            bounds.append((start, min(total, start + step)))
            start += step
            step = max(1, size)
        return bounds

    def _probe(self, model: nn.Module) -> torch.Tensor:
        modes = _save_modes(model)
        model.eval()
        try:
            out = model(self.x[:2])
        except Exception as e:  # noqa: BLE001 - shown to the user as a data/model mismatch
            raise EvaluationError(
                f"the model cannot run on the evaluation data (inputs of shape {tuple(self.x.shape[1:])}, "
                f"dtype {self.x.dtype}): {type(e).__name__}: {str(e)[:300]}"
            ) from e
        finally:
            _restore_modes(modes)
        if not isinstance(out, torch.Tensor):
            raise EvaluationError(
                f"the model returns {type(out).__name__}, not a tensor: pass task='custom' with a metric_fn."
            )
        return out

    # --------------------------------------------------------------- running
    def run(self, forward: Forward | nn.Module) -> Iterator[EvalResult]:
        """Yield an :class:`EvalResult` after each chunk; ``forward(chunk_index, inputs)`` gives outputs
        (or pass a model). The model is put in eval mode and restored afterwards."""
        model = forward if isinstance(forward, nn.Module) else None
        modes = _save_modes(model) if model is not None else []
        if model is not None:
            model.eval()
        fwd: Forward = (lambda i, xb: model(xb)) if model is not None else forward  # type: ignore[assignment]
        t0 = time.perf_counter()
        acc = _Accumulator(self)
        try:
            for i, (a, b) in enumerate(self.bounds):
                with torch.inference_mode():
                    try:
                        out = fwd(i, self.x[a:b])
                    except Exception as e:  # noqa: BLE001 - reported as an evaluation error
                        raise EvaluationError(
                            f"the model raised during evaluation: {type(e).__name__}: {e}"
                        ) from e
                    acc.add(out, self.y[a:b])
                yield acc.result(b, time.perf_counter() - t0)
        finally:
            _restore_modes(modes)

    def evaluate(self, model: nn.Module | Forward) -> EvalResult:
        """The final result of a plain synchronous run."""
        *_, last = self.run(model)
        return last


class _Accumulator:
    """Running sums over chunks; ``result`` turns them into an :class:`EvalResult`."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        c = ev.num_classes
        self.correct = 0
        self.top5 = 0
        self.loss_sum = 0.0
        self.confusion = np.zeros((c, c), dtype=np.int64) if ev.classification else None
        self.preds: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        ev = self.ev
        if not isinstance(out, torch.Tensor):
            raise EvaluationError(f"the model returned {type(out).__name__}, not a tensor of outputs.")
        if ev.classification and (out.dim() != 2 or out.shape[0] != len(y) or out.shape[1] != ev.num_classes):
            raise EvaluationError(
                f"the model returned outputs of shape {tuple(out.shape)} for {len(y)} samples; expected "
                f"({len(y)}, {ev.num_classes})."
            )
        if ev.loss_fn is not None:
            try:
                loss = ev.loss_fn(out, y)  # a mean over the chunk, or per-sample values
                self.loss_sum += float(loss.sum()) if loss.dim() else float(loss) * len(y)
            except Exception as e:  # noqa: BLE001 - reported as an evaluation error
                raise EvaluationError(
                    f"the loss function raised {type(e).__name__} on outputs of shape {tuple(out.shape)} and "
                    f"targets of shape {tuple(y.shape)} ({y.dtype}): {str(e)[:300]}"
                ) from e
        if ev.classification:
            pred = out.argmax(dim=1)
            self.correct += int((pred == y).sum())
            if ev.num_classes >= 5:
                self.top5 += int((out.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum())
            self.confusion += np.bincount(
                (y * ev.num_classes + pred).numpy(), minlength=ev.num_classes**2
            ).reshape(ev.num_classes, ev.num_classes)
            self.preds.append(pred)
        if ev.metric_fn is not None:
            self.outputs.append(out.detach().clone())
            self.targets.append(y)

    def result(self, n: int, elapsed: float) -> EvalResult:
        ev = self.ev
        kwargs: dict[str, Any] = {"n": n, "total": ev.total, "elapsed": elapsed}
        if ev.loss_fn is not None:
            kwargs["loss"] = self.loss_sum / n
            if not math.isfinite(kwargs["loss"]):
                raise EvaluationError(
                    f"the loss is {kwargs['loss']} (NaN/inf): the model's outputs are not finite."
                )
        if ev.classification:
            preds = torch.cat(self.preds).numpy()
            support = self.confusion.sum(axis=1)
            kwargs.update(
                accuracy=self.correct / n,
                accuracy_ci=wilson_interval(self.correct, n),
                top5=self.top5 / n if ev.num_classes >= 5 else None,
                per_class=np.divide(np.diag(self.confusion), support, out=np.full(len(support), np.nan),
                                    where=support > 0),
                confusion=self.confusion.copy(),
                predictions=preds,
            )
            base = getattr(ev, "baseline", None)
            if base is not None and base.predictions is not None:
                kwargs["changed"] = np.flatnonzero(preds != base.predictions[:n])
        if ev.metric_fn is not None:
            kwargs["custom"] = _custom_metric(ev.metric_fn, torch.cat(self.outputs), torch.cat(self.targets))
        return EvalResult(**kwargs)


def _custom_metric(fn: MetricFn, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
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
