"""Fine-tuning with the masks held fixed: pruned weights stay exactly zero, kept weights train.

``finetune`` trains ``session.model`` in place (one ``session.lock`` hold per optimizer step, so a
concurrent reader never sees half-updated weights) and re-zeroes the pruned weights after every step.

What happens to the session afterwards (``commit=True``, the default): the fine-tuned weights become the
session's starting point, so moving a slider prunes *further from the fine-tuned weights* (iterative
pruning, Han et al. 2015) instead of silently throwing the fine-tuning away
(:meth:`PruningSession.rebase`):

- the new "originals" are the current weights (and the biases / BatchNorm scales and shifts the session
  tracks) where kept; pruned entries keep their previous original value;
- every criterion ranks the pruned entries last, so the current plan gives exactly the current masks
  again, raising a sparsity prunes more on top of them (nested masks) and lowering it revives old values;
- ``session.reset()`` restores the pretrained model bit for bit (every parameter and buffer) and starts a
  new history; :func:`revert_finetune` undoes one fine-tune exactly.

With ``commit=False`` the session keeps its pre-fine-tune originals: any later plan change rewrites the
changed layers (weights, biases, BatchNorm scales/shifts) from them, losing their fine-tuning, while
BatchNorm running statistics and untracked parameters stay trained; :func:`revert_finetune` undoes the
training exactly.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .batches import BatchList, SampleBatches, as_batches, as_samples, is_whole_pair, length, split_batch
from .errors import PrunevizError
from .evaluate import Evaluator
from .masks import unit_rows
from .session import PruningSession
from .targets import get_tensor
from .tasks import Task, task_for_batch

#: ``progress(done, total, info)``: ``info`` holds at least ``elapsed`` and ``eta`` (seconds, or None).
ProgressFn = Callable[[int, int, dict[str, Any]], None]
#: A ``threading.Event`` (cancelled when set) or a callable returning True to cancel.
Cancel = threading.Event | Callable[[], bool] | None
OptimizerSpec = str | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")

log = logging.getLogger(__name__)


def is_cancelled(cancel: Cancel) -> bool:
    """Whether ``cancel`` (an Event, a callable or None) asks to stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class ProgressReporter:
    """Calls ``progress(done, total, info)`` with elapsed seconds and an ETA (linear extrapolation)."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress = progress
        self.total = max(int(total), 0)
        self.t0 = time.perf_counter()

    def __call__(self, done: int, **info: Any) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * max(self.total - done, 0) if done > 0 else None
        self.progress(int(done), self.total, {**info, "elapsed": elapsed, "eta": eta})


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (process-wide), restored afterwards; None: unchanged.

    Small models train and evaluate faster on one thread, and a 2-core machine with another busy
    process can make a 2-thread OpenMP team 10-100x slower (measured here: 500 ms vs 5 ms per step).
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss/accuracy over its batches (train mode) and, with eval data, the
    evaluation loss/accuracy after it. ``complete`` is False for an epoch cut short by cancellation."""

    epoch: int
    steps: int
    train_loss: float | None
    train_accuracy: float | None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    #: the task's headline metric after the epoch (accuracy, mAP@0.5, R², ...)
    eval_metric: float | None = None
    seconds: float = 0.0
    complete: bool = True


@dataclass
class FinetuneResult:
    """What :func:`finetune` did. ``initial`` is the evaluation before training (with ``eval_data``)."""

    history: list[EpochRecord]
    initial: EpochRecord | None
    epochs: int
    steps_done: int
    total_steps: int | None
    cancelled: bool = False
    stopped_reason: str | None = None
    committed: bool = False
    elapsed: float = 0.0
    state_before: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    originals_before: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    pins_before: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def epochs_done(self) -> int:
        """Complete epochs."""
        return sum(1 for r in self.history if r.complete)

    @property
    def accuracy(self) -> float | None:
        """The latest evaluation accuracy (None without eval data)."""
        for r in reversed(self.history):
            if r.eval_accuracy is not None:
                return r.eval_accuracy
        return self.initial.eval_accuracy if self.initial is not None else None


# --------------------------------------------------------------------------- masks
def _pruned_entries(session: PruningSession) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, bool tensor True where pruned) for every pruned weight and removed channel's tensors."""
    out = []
    with session.lock:
        for t in session.targets:
            if session.zeros(t.name) == 0:
                continue
            out.append((get_tensor(session.model, t.name), ~session.mask(t.name)))
            keep_channels = session.channel_mask(t.name)
            if keep_channels is not None:
                rows = unit_rows(keep_channels, t)
                for x in session.channel_tensors(t.name):  # bias, BatchNorm scale and shift
                    out.append((get_tensor(session.model, x), ~rows))
    return out


def reapply_masks(session: PruningSession) -> None:
    """Set every pruned weight (and the channel tensors of every removed channel: bias, BatchNorm scale
    and shift) of ``session.model`` to +0.0, as the session does."""
    with session.lock, torch.no_grad():
        for p, pruned in _pruned_entries(session):
            p.masked_fill_(pruned, 0.0)


# --------------------------------------------------------------------------- data
def make_loader(data: Any, batch_size: int, seed: int, shuffle: bool = True) -> Iterable[Any]:
    """Mini-batches of ``data``: (inputs, targets) tensors or a Dataset (shuffled with ``seed``), a DataLoader used
    as is, a list of batches (their order shuffled with ``seed``), or (inputs, targets) of any other structure
    (dict inputs, per-image target dicts: shuffled mini-batches of ``batch_size``)."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PrunevizError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data):
        if len(data[0]) != len(data[1]):
            raise PrunevizError(f"{len(data[0])} inputs but {len(data[1])} targets: they must pair up one to one.")
        data = TensorDataset(data[0], data[1])
    if isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise PrunevizError("the training data is empty: pass at least one (input, target) sample.")
        gen = torch.Generator().manual_seed(int(seed))
        # a last batch of one sample breaks BatchNorm in train mode: drop it
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen,
                          drop_last=n > 1 and n % batch_size == 1)
    try:
        if is_whole_pair(data):
            return SampleBatches(as_samples(data, "the training data"), batch_size, seed, shuffle)
        return BatchList(as_batches(data, where="the training data"), seed, shuffle)
    except PrunevizError as e:
        raise PrunevizError(
            f"{e} Training data may be (inputs, targets) tensors, a torch Dataset, a DataLoader or a list of "
            "(inputs, targets) batches.") from e


def _loader_len(loader: DataLoader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def make_optimizer(spec: OptimizerSpec, params: list[nn.Parameter], lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    """``"adam"``, ``"sgd"`` (with momentum) or ``factory(params) -> Optimizer``."""
    if callable(spec):
        opt = spec(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise PrunevizError(f"the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer.")
        return opt
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise PrunevizError(f"lr must be a positive number, got {lr!r}.")
    if spec == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if spec == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise PrunevizError(f"unknown optimizer {spec!r}; choose one of {', '.join(OPTIMIZERS)} or pass a factory.")


# --------------------------------------------------------------------------- session
def rebase_session(session: PruningSession, before: Mapping[str, torch.Tensor] | None = None,
                   reason: str = "finetune") -> None:
    """Make the model's current (fine-tuned, masked) weights the session's starting point
    (:meth:`PruningSession.rebase`); ``before`` is the ``state_dict`` snapshot taken before training."""
    session.rebase(before, reason=reason)


def revert_finetune(session: PruningSession, result: FinetuneResult) -> None:
    """Undo a fine-tune exactly: every parameter and buffer as before it, and the session's originals
    as before it; the session's current plan is then re-applied from those originals.

    For a chain of fine-tunes (a schedule), revert with the *first* result to get back to the start.
    """
    if not result.state_before:
        raise PrunevizError("this FinetuneResult holds no snapshot (finetune(keep_snapshot=False)); cannot revert.")
    session.restore_originals(result.originals_before, result.state_before, result.pins_before)


def _tensor_names(session: PruningSession) -> list[str]:
    """Every tensor the session keeps an original of: the weights and their channel tensors."""
    return [*session.names, *(x for n in session.names for x in session.channel_tensors(n))]


def _snapshot(session: PruningSession) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    with session.lock:
        state = {k: v.detach().clone() for k, v in session.model.state_dict().items()}
        originals = {x: session.original_tensor(x).clone() for x in _tensor_names(session)}
    return state, originals


# --------------------------------------------------------------------------- training
def finetune(
    session: PruningSession,
    train_data: Any,
    epochs: int = 1,
    lr: float = 1e-3,
    optimizer: OptimizerSpec = "adam",
    batch_size: int = 64,
    progress: ProgressFn | None = None,
    cancel: Cancel = None,
    eval_data: Any = None,
    seed: int = 0,
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    task: Any = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    commit: bool = True,
    keep_snapshot: bool = True,
    evaluator_kwargs: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
) -> FinetuneResult:
    """Train ``session.model`` on ``train_data`` with the session's masks held fixed.

    After every optimizer step the pruned weights (and removed channels' biases) are set to exactly 0
    (their gradients are zeroed before the step too). ``train_data``: (inputs, targets) tensors, a
    Dataset (shuffled with ``seed``) or a DataLoader. ``optimizer``: "adam", "sgd" or
    ``factory(params)``. ``eval_data``: evaluated before training and after each epoch.
    ``progress(done_steps, total_steps, info)``; ``cancel``: Event or callable, checked before every
    step: the model stays consistent (masks applied) and the result records what was done.
    ``commit``: make the fine-tuned weights the session's starting point (see the module docstring).
    The model's train/eval mode is restored. An exception restores the pre-training state and re-raises.
    ``num_threads``: torch threads while training (see :func:`torch_threads`; default unchanged).
    """
    with torch_threads(num_threads):
        return _finetune(session, train_data, epochs, lr, optimizer, batch_size, progress, cancel, eval_data, seed,
                         loss_fn, task, weight_decay, momentum, commit, keep_snapshot, evaluator_kwargs)


def _finetune(session: PruningSession, train_data: Any, epochs: int, lr: float, optimizer: OptimizerSpec,
              batch_size: int, progress: ProgressFn | None, cancel: Cancel, eval_data: Any, seed: int,
              loss_fn: Callable | None, task: Any, weight_decay: float, momentum: float, commit: bool,
              keep_snapshot: bool, evaluator_kwargs: Mapping[str, Any] | None) -> FinetuneResult:
    if not isinstance(epochs, int) or epochs < 0:
        raise PrunevizError(f"epochs must be a whole number >= 0, got {epochs!r}.")
    task = task if task is not None else session.task
    model = session.model
    loader = make_loader(train_data, batch_size, seed)
    n_batches = _loader_len(loader)
    total = n_batches * epochs if n_batches is not None else None
    state_before, originals_before = _snapshot(session) if keep_snapshot else ({}, {})
    ev = None
    initial = None
    if eval_data is not None:
        kw = {"first_chunk": 512, "chunk_size": 512, "task": task if task is not None else "auto",
              "loss_fn": loss_fn, **dict(evaluator_kwargs or {})}
        with session.lock:
            ev = Evaluator(model, eval_data, **kw)
        b = ev.baseline
        initial = EpochRecord(0, 0, None, None, b.loss, b.accuracy, b.value)
    result = FinetuneResult([], initial, epochs, 0, total, state_before=state_before,
                            originals_before=originals_before, pins_before=session.pins() if keep_snapshot else {})
    report = ProgressReporter(progress, total or 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr, weight_decay, momentum)
    was_training = model.training
    generation = session.generation
    entries = _pruned_entries(session)
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reapply_masks(session)
            for epoch in range(1, epochs + 1):
                stop, task = _train_epoch(session, model, loader, opt, task, loss_fn, entries, generation, cancel,
                                          report, result, epoch, ev)
                if stop is not None:
                    result.cancelled = True
                    result.stopped_reason = stop
                    break
    except BaseException:
        if keep_snapshot and session.generation == generation:
            with session.lock, torch.no_grad():
                model.load_state_dict(state_before)
        raise
    finally:
        model.train(was_training)
    reapply_masks(session)
    result.elapsed = time.perf_counter() - t0
    if commit and result.steps_done > 0:
        rebase_session(session, state_before or None, reason="finetune")
        result.committed = True
    return result


def _train_epoch(session: PruningSession, model: nn.Module, loader: Iterable[Any], opt: torch.optim.Optimizer,
                 task: Any, loss_fn: Callable | None, entries: list, generation: int, cancel: Cancel,
                 report: ProgressReporter, result: FinetuneResult, epoch: int,
                 ev: Evaluator | None) -> tuple[str | None, Any]:
    """One epoch; appends its :class:`EpochRecord`; returns why it stopped early (None if it did not) and the
    task (picked from the first batch when it was not given)."""
    e0 = time.perf_counter()
    loss_sum, correct, seen, steps, classify = 0.0, 0, 0, 0, False
    stop = None
    model.train()
    for raw in loader:
        if is_cancelled(cancel):
            stop = "cancelled"
            break
        x, y = split_batch(raw, "a batch of the training data")
        if not isinstance(task, Task):
            task = task_for_batch(task, model, (x, y), loss_fn=loss_fn)
        with session.lock:
            if session.generation != generation:
                stop = "the session's plan changed during fine-tuning"
                break
            opt.zero_grad(set_to_none=True)
            loss, out = task.loss_and_outputs(model, (x, y))
            if not torch.isfinite(loss):
                stop = f"the training loss became {loss.item()} (try a lower learning rate)"
                break
            loss.backward()
            with torch.no_grad():
                for p, pruned in entries:
                    if p.grad is not None:
                        p.grad.masked_fill_(pruned, 0.0)
            opt.step()
            with torch.no_grad():
                for p, pruned in entries:
                    p.masked_fill_(pruned, 0.0)
        steps += 1
        result.steps_done += 1
        n = length(y)
        loss_sum += float(loss.detach()) * n
        seen += n
        classify = task.name == "classification" and isinstance(out, torch.Tensor)
        if classify:
            correct += int((out.detach().argmax(1) == y).sum())
        report(result.steps_done, epoch=epoch, loss=loss_sum / seen, phase="finetune")
    evaluated = None
    if ev is not None and (steps > 0 or stop is None):
        with session.lock:
            evaluated = ev.evaluate(model)
    result.history.append(EpochRecord(
        epoch,
        steps,
        loss_sum / seen if seen else None,
        correct / seen if seen and classify else None,
        evaluated.loss if evaluated is not None else None,
        evaluated.accuracy if evaluated is not None else None,
        eval_metric=evaluated.value if evaluated is not None else None,
        seconds=time.perf_counter() - e0,
        complete=stop is None,
    ))
    return stop, task
