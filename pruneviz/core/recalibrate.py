"""BatchNorm re-calibration: re-estimate every BatchNorm's running statistics on the pruned model, reversibly.

Structured pruning changes what each BatchNorm sees (the channels feeding the next convolution are gone), while
its running mean and variance still describe the dense network; much of the accuracy lost right after pruning
is this mismatch. :func:`recalibrate_batchnorm` runs a few batches through a copy of the current (masked)
model with only the BatchNorm layers in train mode (running statistics reset, ``momentum=None``: a cumulative
average over the batches), everything else in eval mode, no gradient and no optimizer step, then copies the new
statistics into the session's model. Nothing else changes: weights, masks and the plan stay as they are.

Reversible: the result keeps the statistics from before, :func:`revert_recalibration` puts them back bit for bit,
and the session's next change (``sticky=True``: its next ``reset()``) does so by itself, so a reset model is
bit-identical to the original and each plan's accuracy does not depend on the order of slider moves. The
statistics are only put back while they are still the re-calibrated ones (a fine-tune or a rebase since then
owns them).

The session's model is changed, but a :class:`~pruneviz.core.live.LiveEvaluator` evaluates its own copy: tell it
with ``on_change`` (e.g. ``live.request()`` once it copies BatchNorm buffers).
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import as_batches, length, take_range
from .errors import PrunevizError
from .tasks import call_model

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_WHY = {"set": "a new sparsity", "criterion": "a new criterion", "scope": "a new scope", "undo": "undo", "redo": "redo",
        "reset": "reset", "plan": "a new plan", "finetune": "fine-tuning"}


class RecalibrationError(PrunevizError):
    """BatchNorm re-calibration cannot run or be undone as asked (nothing was changed)."""


class StaleRecalibrationError(RecalibrationError):
    """The session changed while re-calibrating: the statistics were computed for an older plan, so they were
    dropped."""


@dataclass
class RecalibrationResult:
    """One re-calibration: which BatchNorm layers, the statistics before and after (``{module.buffer: tensor}``),
    how many batches/samples, and, with an evaluator, the metric before and after (EvalResults).

    ``state``: "applied", "reverted" (undone: by :func:`revert_recalibration` or a session change), "replaced"
    (a newer re-calibration took over, keeping the original ``before``) or "obsolete" (the statistics were
    changed by something else, e.g. fine-tuning, so they were left alone)."""

    layers: list[str]
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    batches: int
    samples: int
    seconds: float
    generation: int
    sticky: bool = False
    metric_before: Any = None
    metric_after: Any = None
    state: str = "applied"
    reverted_by: str = ""
    source: str = ""  # what the batches were (for messages), e.g. "calibration data"
    _unsubscribe: Callable[[], None] | None = field(default=None, repr=False)
    _on_change: Callable[[RecalibrationResult], None] | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state == "applied"


_ACTIVE: weakref.WeakKeyDictionary[Any, RecalibrationResult] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules that track running statistics."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _buffers(model: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for n in layers:
        m = model.get_submodule(n)
        for b in BUFFERS:
            t = getattr(m, b, None)
            if isinstance(t, torch.Tensor):
                out[f"{n}.{b}"] = t
    return out


def _write(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, t in _buffers(model, sorted({k.rsplit(".", 1)[0] for k in values})).items():
            t.copy_(values[name])


def _same(model: nn.Module, values: dict[str, torch.Tensor]) -> bool:
    now = _buffers(model, sorted({k.rsplit(".", 1)[0] for k in values}))
    return now.keys() == values.keys() and all(torch.equal(now[k], v) for k, v in values.items())


def _inputs(batches: Any, max_batches: int) -> list[Any]:
    """The inputs of at most ``max_batches`` batches: (inputs, targets) data in any form pruneviz reads, a list
    of input tensors, or one input tensor (cut into batches of 64)."""
    if isinstance(batches, torch.Tensor):
        return [batches[i: i + 64] for i in range(0, len(batches), 64)][:max_batches]
    if isinstance(batches, list) and batches and all(isinstance(b, torch.Tensor) for b in batches):
        return list(batches[:max_batches])
    return [inputs for inputs, _ in as_batches(batches, where="the re-calibration data", limit=max_batches)]


def recalibrate_batchnorm(session: Any, batches: Any, *, max_batches: int = 20, sticky: bool = False,
                          evaluator: Any = None, metric_before: Any = None,
                          on_change: Callable[[RecalibrationResult], None] | None = None,
                          forward_fn: Callable[[nn.Module, Any], Any] | None = None) -> RecalibrationResult:
    """Re-estimate the running statistics of every BatchNorm of ``session.model`` on at most ``max_batches``
    batches of ``batches`` (see the module notes), and write them into the session's model.

    ``evaluator`` (an :class:`~pruneviz.core.evaluate.Evaluator`): also evaluate before and after (on copies;
    ``metric_before``: an EvalResult of the current plan already at hand, so only "after" is evaluated).
    ``on_change(result)`` is called after the statistics are written and after they are put back (by
    :func:`revert_recalibration` or by the session's next change). Raises :class:`RecalibrationError` without
    changing anything when the model has no BatchNorm or the data does not fit, and
    :class:`StaleRecalibrationError` when the session changed meanwhile. The session's lock is held only to copy.
    """
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
        raise RecalibrationError(f"max_batches must be a whole number >= 1, got {max_batches!r}.")
    forward_fn = forward_fn or call_model
    t0 = time.perf_counter()
    with session.lock:
        layers = batchnorms(session.model)
        if not layers:
            raise RecalibrationError(f"{type(session.model).__name__} has no BatchNorm layer with running statistics: "
                                     "there is nothing to re-calibrate (fine-tuning recovers accuracy instead).")
        generation = session.generation
        work = copy.deepcopy(session.model).eval()
        current = {k: v.detach().clone() for k, v in _buffers(session.model, layers).items()}
    inputs = _inputs(batches, max_batches)
    if not inputs:
        raise RecalibrationError("the re-calibration data gave no batches: pass a few batches of inputs.")
    if evaluator is not None and metric_before is None:
        metric_before = evaluator.evaluate(work)
    for n in layers:
        bn = work.get_submodule(n)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
        bn.train()
    samples = 0
    try:
        with torch.no_grad():
            for xb in inputs:
                forward_fn(work, xb)
                samples += length(xb)
    except Exception as e:  # noqa: BLE001 - the data does not fit the model: say so, change nothing
        raise RecalibrationError(f"running the re-calibration data through {type(work).__name__} failed "
                                 f"({type(e).__name__}: {str(e)[:200]}); pass batches of the inputs the model takes "
                                 "(more than one sample each). Nothing was changed.") from None
    work.eval()
    after = {k: v.detach().clone() for k, v in _buffers(work, layers).items()}
    metric_after = evaluator.evaluate(work) if evaluator is not None else None
    with session.lock:
        if session.generation != generation:
            raise StaleRecalibrationError("the plan changed while re-calibrating, so the new statistics (computed for "
                                          "the previous plan) were dropped; re-calibrate again.")
        with _GUARD:
            prior = _ACTIVE.get(session)
            before = current
            if prior is not None and prior.active and _same(session.model, prior.after):
                before = prior.before  # undo goes back to the statistics before the first re-calibration
                _detach(prior, "replaced")
            _write(session.model, after)
            result = RecalibrationResult(layers, before, after, len(inputs), samples, time.perf_counter() - t0,
                                         generation, sticky, metric_before, metric_after, _on_change=on_change)
            result._unsubscribe = session.on_change(lambda event: _on_session(session, result, event))
            _ACTIVE[session] = result
    _notify(result)
    return result


def revert_recalibration(session: Any, result: RecalibrationResult) -> None:
    """Put back the BatchNorm statistics from before ``result`` (bit for bit). Refused, changing nothing, when it
    was already undone or when the statistics changed since (e.g. fine-tuning: they are no longer the
    re-calibrated ones)."""
    with session.lock, _GUARD:
        if not result.active:
            raise RecalibrationError(f"this re-calibration is no longer in force ({result.state}"
                                     f"{': ' + result.reverted_by if result.reverted_by else ''}); nothing to undo.")
        if not _same(session.model, result.after):
            _detach(result, "obsolete")
            raise RecalibrationError("the BatchNorm statistics changed since the re-calibration (fine-tuning or "
                                     "another change owns them now), so undoing it would overwrite them; nothing "
                                     "was changed.")
        _write(session.model, result.before)
        _detach(result, "reverted", "by request")
    _notify(result)


def active_recalibration(session: Any) -> RecalibrationResult | None:
    """The re-calibration in force on ``session`` (None if none)."""
    r = _ACTIVE.get(session)
    return r if r is not None and r.active else None


def _detach(result: RecalibrationResult, state: str, why: str = "") -> None:
    result.state, result.reverted_by = state, why
    if result._unsubscribe is not None:
        result._unsubscribe()
        result._unsubscribe = None


def _notify(result: RecalibrationResult) -> None:
    if result._on_change is not None:
        try:
            result._on_change(result)
        except Exception:  # noqa: BLE001 - a broken view must not break the session
            import logging

            logging.getLogger(__name__).exception("pruneviz: a re-calibration listener raised")


def _on_session(session: Any, result: RecalibrationResult, event: Any) -> None:
    """The session changed: the re-calibrated statistics belong to the plan they were computed for."""
    if result.sticky and event.reason != "reset":
        return
    with session.lock, _GUARD:
        if not result.active:
            return
        if not _same(session.model, result.after):  # a rebase, a reset to the pretrained model, a fine-tune
            _detach(result, "obsolete")
            return
        _write(session.model, result.before)
        _detach(result, "reverted", "by " + _WHY.get(event.reason, f"a change of the plan ({event.reason})"))
    _notify(result)


def recalibration_batches(session: Any, evaluation: Any = None, batch_size: int = 64,
                          max_batches: int = 20) -> tuple[list[Any], str]:
    """The data to re-calibrate on: the session's calibration batches when it has them, else batches of the
    evaluation inputs ``evaluation`` (one batched structure, e.g. ``evaluator.x``); with a word on which."""
    calib, _ = session.calibration()
    if calib:
        return [inputs for inputs, _ in calib][:max_batches], "calibration data"
    if evaluation is None:
        raise RecalibrationError("no data to re-calibrate on: give the session calib_data=... or pass evaluation "
                                 "inputs.")
    n = length(evaluation, "the evaluation inputs")
    return [take_range(evaluation, a, min(n, a + batch_size)) for a in range(0, n, batch_size)][:max_batches], \
        "evaluation data"
