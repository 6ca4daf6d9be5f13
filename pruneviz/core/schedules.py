"""Pruning schedules: prune, fine-tune, prune more... until a target sparsity (gradual pruning).

- ``oneshot``: one prune straight to the target, then one fine-tune.
- ``equal``: ``steps`` equal increments from the initial sparsity to the target.
- ``cubic`` (Zhu & Gupta 2017): ``s_t = s_f + (s_i - s_f) (1 - t/n)^3``: big steps first, while the
  network has redundancy to spare, small ones near the target.

Each prune is the session's global slider (one threshold in global scope, the same sparsity for every
layer in layer scope, the same channel ratio for every layer but the output layer in structured scope)
applied to the *fine-tuned* weights: every fine-tune is committed (see :mod:`pruneviz.core.finetune`),
so masks only grow and the last step lands exactly on the target.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import PrunevizError
from .evaluate import Evaluator
from .files import atomic_write
from .finetune import (
    Cancel,
    FinetuneResult,
    OptimizerSpec,
    ProgressFn,
    ProgressReporter,
    _loader_len,
    finetune,
    is_cancelled,
    make_loader,
    revert_finetune,
    torch_threads,
)
from .masks import check_sparsity
from .session import PruningSession

SCHEDULES: tuple[str, ...] = ("oneshot", "equal", "cubic")


def schedule_sparsities(target: float, steps: int = 5, schedule: str = "cubic", initial: float = 0.0) -> list[float]:
    """The sparsity after each prune step; the last one is exactly ``target``."""
    target = check_sparsity(target, "the schedule's target")
    initial = check_sparsity(initial, "the schedule's initial sparsity")
    if schedule not in SCHEDULES:
        raise PrunevizError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    if schedule == "oneshot":
        return [target]
    if not isinstance(steps, int) or steps < 1:
        raise PrunevizError(f"steps must be a whole number >= 1, got {steps!r}.")
    out = []
    for t in range(1, steps + 1):
        f = t / steps
        if schedule == "equal":
            s = initial + (target - initial) * f
        else:
            s = target + (initial - target) * (1.0 - f) ** 3
        out.append(min(1.0, max(0.0, s)))
    out[-1] = target
    return out


@dataclass(frozen=True)
class ScheduleRecord:
    """One point of the drop-and-recover curve: after the prune or the fine-tune of ``step``
    (step 0, phase "start": before anything). ``sparsity``: the session's fraction of pruned prunable
    weights; ``target``: the schedule's value for this step (structured scope: a channel ratio)."""

    step: int
    phase: str
    sparsity: float
    target: float
    accuracy: float | None
    loss: float | None
    seconds: float = 0.0
    #: the task's headline metric (accuracy, mAP@0.5, R², ...)
    metric: float | None = None


@dataclass
class ScheduleResult:
    """The records, the planned sparsities, the fine-tune results, and whether it was cancelled."""

    records: list[ScheduleRecord]
    schedule: str
    target: float
    sparsities: list[float]
    finetunes: list[FinetuneResult] = field(default_factory=list, repr=False)
    cancelled: bool = False
    elapsed: float = 0.0

    @property
    def steps_done(self) -> int:
        return max((r.step for r in self.records if r.phase == "finetune"), default=0)

    @property
    def final_accuracy(self) -> float | None:
        return self.records[-1].accuracy if self.records else None

    def curve(self, value: str = "accuracy") -> tuple[list[str], list[float | None]]:
        """(labels like "1 prune", values): the records in order, for a drop-and-recover plot."""
        return [f"{r.step} {r.phase}" for r in self.records], [getattr(r, value) for r in self.records]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the records as CSV (atomically)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["step", "phase", "sparsity", "target", "accuracy", "loss", "seconds"])
        for r in self.records:
            w.writerow([r.step, r.phase, repr(r.sparsity), repr(r.target),
                        "" if r.accuracy is None else repr(r.accuracy),
                        "" if r.loss is None else repr(r.loss), f"{r.seconds:.3f}"])
        payload = buf.getvalue().encode()
        return atomic_write(path, lambda f: f.write(payload))

    def revert(self, session: PruningSession) -> None:
        """Undo all of the schedule's fine-tuning exactly (see :func:`~pruneviz.core.finetune.revert_finetune`);
        the session keeps the plan it has now, re-applied to the pre-schedule weights."""
        if self.finetunes:
            revert_finetune(session, self.finetunes[0])


def run_schedule(
    session: PruningSession,
    target_sparsity: float,
    schedule: str = "cubic",
    steps: int = 5,
    train_data: Any = None,
    eval_data: Any = None,
    epochs_per_step: int = 1,
    *,
    lr: float = 1e-3,
    optimizer: OptimizerSpec = "adam",
    batch_size: int = 64,
    initial_sparsity: float | None = None,
    progress: ProgressFn | None = None,
    cancel: Cancel = None,
    seed: int = 0,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    task: Any = None,
    evaluator_kwargs: Mapping[str, Any] | None = None,
    finetune_kwargs: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
) -> ScheduleResult:
    """Alternate prune and fine-tune (``epochs_per_step`` epochs on ``train_data``) along ``schedule``
    until ``target_sparsity``, evaluating on ``eval_data`` after every prune and every fine-tune.

    ``schedule``: "oneshot" (``steps`` ignored), "equal", "cubic", or an explicit sequence of sparsities.
    ``initial_sparsity``: where the schedule starts (default: the session's global slider value).
    The session's scope decides what the sparsity means. ``progress(done, total, info)`` counts prune
    steps and training batches; ``cancel`` stops at the next batch or step, leaving the session
    consistent (the last plan applied, whatever was fine-tuned committed) with ``cancelled=True``.
    ``num_threads``: torch threads for the whole run (default unchanged; 1 is fastest for small models).
    """
    with torch_threads(num_threads):
        t0 = time.perf_counter()
        if train_data is None:
            raise PrunevizError("run_schedule needs train_data to fine-tune between prune steps.")
        if not isinstance(epochs_per_step, int) or epochs_per_step < 0:
            raise PrunevizError(f"epochs_per_step must be a whole number >= 0, got {epochs_per_step!r}.")
        target = check_sparsity(target_sparsity, "the schedule's target")
        start = session.plan.global_sparsity if initial_sparsity is None else initial_sparsity
        if isinstance(schedule, str):
            sparsities = schedule_sparsities(target, steps, schedule, start)
            name = schedule
        else:
            sparsities = [check_sparsity(v, "a schedule step") for v in _as_list(schedule)]
            if not sparsities or sparsities[-1] != target:
                raise PrunevizError("an explicit schedule must be a non-empty sequence ending at target_sparsity.")
            name = "custom"

        loader = make_loader(train_data, batch_size, seed)
        n_batches = _loader_len(loader) or 0
        per_step = 1 + epochs_per_step * n_batches
        report = ProgressReporter(progress, per_step * len(sparsities))
        ev = None
        if eval_data is not None:
            with session.lock:
                ev = Evaluator(session.model, eval_data,
                               **{"first_chunk": 512, "chunk_size": 512, "loss_fn": loss_fn,
                                  "task": task if task is not None else (session.task or "auto"),
                                  **dict(evaluator_kwargs or {})})

        def measure(step: int, phase: str, goal: float, since: float) -> ScheduleRecord:
            r = None
            if ev is not None:
                with session.lock:
                    r = ev.evaluate(session.model)
            rec = ScheduleRecord(step, phase, session.summary().sparsity, goal,
                                 r.accuracy if r is not None else None, r.loss if r is not None else None,
                                 time.perf_counter() - since, r.value if r is not None else None)
            result.records.append(rec)
            return rec

        result = ScheduleResult([], name, target, sparsities)
        measure(0, "start", start, t0)
        ft_kw = {"lr": lr, "optimizer": optimizer, "loss_fn": loss_fn, "task": task, "seed": seed,
                 **dict(finetune_kwargs or {})}
        for i, s in enumerate(sparsities, start=1):
            if is_cancelled(cancel):
                result.cancelled = True
                break
            offset = (i - 1) * per_step
            p0 = time.perf_counter()
            session.set_global_sparsity(s)
            rec = measure(i, "prune", s, p0)
            report(offset + 1, phase="prune", step=i, sparsity=rec.sparsity, accuracy=rec.accuracy)
            if epochs_per_step == 0:
                continue

            def inner(done: int, total: int, info: dict[str, Any], _offset: int = offset + 1, _i: int = i) -> None:
                report(_offset + done, phase="finetune", step=_i, epoch=info.get("epoch"), loss=info.get("loss"))

            f0 = time.perf_counter()
            ft = finetune(session, loader, epochs=epochs_per_step, progress=inner, cancel=cancel, commit=True,
                          keep_snapshot=not result.finetunes, **ft_kw)
            result.finetunes.append(ft)
            rec = measure(i, "finetune", s, f0)
            report(offset + per_step, phase="finetune", step=i, sparsity=rec.sparsity, accuracy=rec.accuracy)
            if ft.cancelled:
                result.cancelled = True
                break
        result.elapsed = time.perf_counter() - t0
        return result


def _as_list(values: Sequence[float]) -> list[float]:
    try:
        return list(values)
    except TypeError:
        raise PrunevizError(f"schedule must be one of {', '.join(SCHEDULES)} or a sequence of sparsities.") from None
