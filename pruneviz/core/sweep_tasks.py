"""The worker side of a sensitivity sweep: one task = one layer over all levels, on its own model copy.

Everything here is picklable and importable by a fresh worker process (the forkserver preloads this module).
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .criteria import Criterion
from .evaluate import EvalResult, Evaluator
from .finetune import Cancel, is_cancelled, torch_threads
from .session import PruningSession
from .targets import get_tensor


@dataclass(frozen=True)
class Task:
    """One layer over all levels (``layer=None``: unused). Picklable."""

    layer: str
    levels: tuple[float, ...]
    scope: str
    criterion: str | Criterion
    seed: int
    include: tuple[str, ...]
    originals: dict[str, torch.Tensor] | None = None  # "current" mode: the layer's original weight and channel tensors


#: Payloads installed once per worker process by the default pool's initializer (token -> pickled bytes).
_INSTALLED: dict[str, bytes] = {}


def install_payload(token: str, blob: bytes) -> None:
    _INSTALLED.clear()
    _INSTALLED[token] = blob


@dataclass
class Payload:
    """The model, evaluation tensors and settings shared by every task: pickled once for pools.

    ``obj``: in-process (inline); ``blob``: shipped with every task (any executor); ``token``: installed
    in each worker of the default pool once, so tasks do not carry the model again.
    """

    blob: bytes | None = None
    obj: dict[str, Any] | None = None
    token: str | None = None

    def load(self) -> dict[str, Any]:
        if self.token is not None:
            return pickle.loads(_INSTALLED[self.token])
        if self.blob is not None:
            return pickle.loads(self.blob)
        assert self.obj is not None
        return {**self.obj, "model": copy.deepcopy(self.obj["model"])}


def metrics_of(r: EvalResult) -> dict[str, float]:
    """Every scalar metric of a result (the task's, the loss, the user's metric_fn values)."""
    out = {"accuracy": r.accuracy, "loss": r.loss, "top5": r.top5, **r.metrics, **r.custom}
    return {k: float(v) for k, v in out.items() if v is not None}


def make_evaluator(model: nn.Module, data: Mapping[str, Any]) -> Evaluator:
    kwargs = {"task": data.get("task") or "auto", "loss_fn": data.get("loss_fn"), **data["eval_kwargs"]}
    return Evaluator(model, data["samples"], **kwargs)


def run_task(payload: Payload, task: Task, cancel: Cancel = None,
              on_level: Callable[[], None] | None = None) -> dict[str, Any]:
    """Sweep one layer; runs in a worker (or inline). Returns plain data: rows or a skip reason."""
    with torch_threads(1):
        data = payload.load()
        model: nn.Module = data["model"]
        with torch.no_grad():
            for name, value in (task.originals or {}).items():
                get_tensor(model, name).copy_(value)
        session = PruningSession(
            model, criterion=task.criterion, scope=task.scope, include=list(task.include),
            calib_data=data["calib"], loss_fn=data["loss_fn"], seed=task.seed, task=data.get("task"),
        )
        if not session.supported(task.layer):
            return {"layer": task.layer, "rows": [], "skipped": f"criterion cannot score {task.layer}"}
        ev = make_evaluator(model, data)
        t = session.target(task.layer)
        size = t.channels if task.scope == "structured" else t.numel
        rows = []
        for v in task.levels:
            if is_cancelled(cancel):
                break
            session.set_sparsity(task.layer, v)
            pruned = session.zeros(task.layer) // (t.channel_size if task.scope == "structured" else 1)
            rows.append((v, pruned, size, metrics_of(ev.evaluate(model))))
            if on_level is not None:
                on_level()
        return {"layer": task.layer, "rows": rows, "skipped": None}


def default_mp_context() -> mp.context.BaseContext:
    """forkserver (a clean single-threaded server forks the workers; torch preloaded once) where
    available, else spawn. Plain fork is unsafe with torch's threads."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "pruneviz.core.sweep_tasks"])
        return ctx
    return mp.get_context("spawn")
