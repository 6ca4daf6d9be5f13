"""LiveEvaluator: re-evaluates in a worker thread whenever the session changes.

Design: the worker evaluates a *private copy* of the model. At the start of a job it copies the weights of
the layers that changed, under the session's lock, so a slider can never change masks under a forward
pass in flight. Before each chunk it checks the session's generation: a stale job stops at the next chunk.
Results are reported under the session's lock only while their generation is still current, so no result
is ever reported for weights that are no longer in force.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .evaluate import EvalResult, Evaluator
from .prefix import StagedModel
from .session import PruningSession, SessionEvent
from .targets import get_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveEvent:
    """``kind``: "status" (busy/idle in ``status``), "result" (``result``), or "error" (``error``, a message)."""

    kind: str
    generation: int
    result: EvalResult | None = None
    error: str | None = None
    status: str = "idle"


LiveListener = Callable[[LiveEvent], None]


class _PrefixCache:
    """Activations entering one stage, per chunk, valid while the layers before that stage are unchanged."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.stage: int | None = None
        self.states: dict[str, tuple] = {}
        self.acts: list[torch.Tensor] = []

    def valid_for(self, stage_of: dict[str, int], states: dict[str, tuple]) -> int | None:
        if self.stage is None:
            return None
        for name, st in stage_of.items():
            if st < self.stage and states[name] != self.states.get(name):
                return None
        return self.stage

    def store(self, stage: int, states: dict[str, tuple], acts: list[torch.Tensor]) -> None:
        if sum(a.numel() * a.element_size() for a in acts) > self.limit:
            self.stage, self.acts = None, []
            return
        self.stage, self.states, self.acts = stage, dict(states), acts


class LiveEvaluator:
    """Evaluate ``session``'s model on ``data`` after every change, progressively, in a worker thread.

    ``prefix_cache``: reuse the activations entering the first changed stage (at most ``cache_mb`` MB;
    models that are not a chain of stages always run whole). Other keyword arguments go to
    :class:`Evaluator` (subset_size, first_chunk, chunk_size, metric_fn, ...).
    """

    def __init__(
        self,
        session: PruningSession,
        data: Any,
        *,
        prefix_cache: bool = True,
        cache_mb: float = 256,
        start: bool = True,
        **evaluator_kwargs: Any,
    ) -> None:
        self.session = session
        with session.lock:
            self._model = copy.deepcopy(session.model).eval()
            self._states = {n: ("dense",) for n in session.names}
            with torch.no_grad():  # the baseline is the unpruned model
                for t in session.targets:
                    get_tensor(self._model, t.name).copy_(session.original(t.name))
                    bias = session.original_bias(t.name)
                    if bias is not None:
                        get_tensor(self._model, t.bias_name).copy_(bias)
        self.evaluator = Evaluator(self._model, data, **evaluator_kwargs)
        self.baseline: EvalResult = self.evaluator.baseline
        self._staged = StagedModel(self._model) if prefix_cache else None
        self._stage_of = (
            {t.name: self._staged.stage_of(t.module_name) for t in session.targets}
            if self._staged is not None and self._staged.ok
            else {}
        )
        self._cache = _PrefixCache(int(cache_mb * 2**20))
        self._done = -1
        self._listeners: list[LiveListener] = []
        self._cond = threading.Condition()
        self._wanted = -1
        self._closed = False
        self.latest: EvalResult | None = None
        self.latest_final: EvalResult | None = None
        self.last_error: str | None = None
        self.status = "idle"
        self._unsubscribe = session.on_change(self._on_change)
        self._thread = threading.Thread(target=self._loop, name="pruneviz-live-eval", daemon=True)
        if start:
            self._thread.start()
            self.request()

    # ------------------------------------------------------------------ public
    def on_event(self, listener: LiveListener) -> Callable[[], None]:
        """Call ``listener(LiveEvent)`` for status changes, results and errors; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def request(self) -> None:
        """Evaluate the session's current weights (done automatically after every change)."""
        with self._cond:
            self._wanted = self.session.generation
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the current generation has a final result or an error (True), or the timeout passes."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.status == "idle" and self._wanted == self.session.generation
                and self._done == self._wanted,
                timeout,
            )

    def close(self) -> None:
        """Stop listening to the session and stop the worker."""
        self._unsubscribe()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def prefix_cache_active(self) -> bool:
        return bool(self._stage_of)

    # --------------------------------------------------------------- internals
    def _on_change(self, event: SessionEvent) -> None:
        with self._cond:
            self._wanted = max(self._wanted, event.generation)
            self._cond.notify_all()

    def _emit(self, event: LiveEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken view must not stop evaluation
                log.exception("pruneviz: a live-evaluation listener raised")

    def _set_status(self, status: str, generation: int) -> None:
        with self._cond:
            self.status = status
            self._cond.notify_all()
        self._emit(LiveEvent("status", generation, status=status))

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted > self._done)
                if self._closed:
                    return
            try:
                self._job()
            except Exception:  # noqa: BLE001 - keep the worker alive whatever happens
                log.exception("pruneviz: live evaluation failed")

    def _sync(self) -> tuple[int, list[str]]:
        """Copy the changed layers' weights into the private model (under the session lock)."""
        s = self.session
        changed = []
        with s.lock, torch.no_grad():
            generation = s.generation
            for t in s.targets:
                state = s.layer_state(t.name)
                if state != self._states[t.name]:
                    get_tensor(self._model, t.name).copy_(get_tensor(s.model, t.name))
                    if t.bias_name:
                        get_tensor(self._model, t.bias_name).copy_(get_tensor(s.model, t.bias_name))
                    self._states[t.name] = state
                    changed.append(t.name)
        return generation, changed

    def _report(self, event: LiveEvent) -> bool:
        """Report ``event`` only if its generation is still current (checked and reported under the lock)."""
        with self.session.lock:
            if self.session.generation != event.generation:
                return False
            if event.result is not None:
                self.latest = event.result
                if event.result.final:
                    self.latest_final = event.result
            if event.kind == "error":
                self.last_error = event.error
            self._emit(event)
            return True

    def _finish(self, generation: int) -> None:
        with self._cond:
            self._done = max(self._done, generation)
        if self.session.generation == generation:
            self._set_status("idle", generation)

    def _job(self) -> None:
        generation, changed = self._sync()
        self._set_status("busy", generation)
        if not changed and self.latest_final is not None and self.last_error is None:
            # same weights as the last final answer (e.g. a criterion switch that kept every mask)
            self._report(LiveEvent("result", generation, result=self.latest_final.with_generation(generation)))
            self._finish(generation)
            return
        start = self._cache.valid_for(self._stage_of, self._states) if self._stage_of else None
        first_dirty = min((self._stage_of[n] for n in changed), default=None) if self._stage_of else None
        capture = first_dirty if first_dirty is not None and first_dirty > 0 and first_dirty != start else None
        if start is not None and capture is not None and capture < start:
            capture = None
        captured: list[torch.Tensor] = []
        staged = self._staged

        def forward(i: int, xb: torch.Tensor) -> torch.Tensor:
            if staged is None or not self._stage_of:
                return self._model(xb)
            if start is not None:
                out, cap = staged.run(xb, start, self._cache.acts[i], capture)
            else:
                out, cap = staged.run(xb, 0, None, capture)
            if cap is not None:
                captured.append(cap)
            return out

        try:
            for result in self.evaluator.run(forward):
                if self.session.generation != generation:
                    return  # stale: a newer plan is waiting; its job starts at once
                if not self._report(LiveEvent("result", generation, result=result.with_generation(generation))):
                    return
            with self._cond:
                self.last_error = None
            if capture is not None and len(captured) == len(self.evaluator.bounds):
                self._cache.store(capture, self._states, captured)
        except Exception as e:  # noqa: BLE001 - shown to the user as an error event
            self._cache.stage = None
            self._report(LiveEvent("error", generation, error=str(e)))
        finally:
            self._finish(generation)
