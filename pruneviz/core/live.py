"""LiveEvaluator: re-evaluates in a worker thread whenever the session changes.

Design: the worker evaluates a *private copy* of the model. At the start of a job it copies the weights of
the layers that changed, under the session's lock, so a slider can never change masks under a forward
pass in flight. Before each chunk it checks the session's generation: a stale job stops at the next chunk.
Results are reported under the session's lock only while their generation is still current, so no result
is ever reported for weights that are no longer in force.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import EvaluationError
from .evaluate import EvalResult, Evaluator
from .guard import WorkGuard
from .prefix import StagedModel
from .session import PruningSession, SessionEvent
from .targets import get_tensor
from .tasks import call_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveEvent:
    """``kind``: "status" (busy/idle in ``status``), "result" (``result``) or "error" (``error``)."""

    kind: str
    generation: int
    result: EvalResult | None = None
    error: str | None = None
    status: str = "idle"


LiveListener = Callable[[LiveEvent], None]


class _PrefixCache:
    """Activations entering some stages, per chunk; an entry is valid while the layers before its stage
    have the states they had when it was stored. Several stages are kept (least recently used evicted first,
    within ``limit_bytes``), so moving two deep layers in turn never falls back to a full forward."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        # stage -> (layer states when stored, per-chunk activations entering the stage, bytes); LRU order
        self.entries: OrderedDict[int, tuple[dict[str, tuple], list[torch.Tensor], int]] = OrderedDict()

    @staticmethod
    def _valid(
        stage: int, recorded: dict[str, tuple], stage_of: dict[str, int], states: dict[str, tuple]
    ) -> bool:
        return all(states[name] == recorded.get(name) for name, st in stage_of.items() if st < stage)

    def best(self, stage_of: dict[str, int], states: dict[str, tuple]) -> int | None:
        """The deepest stage whose cached activations fit the current states (None: run everything)."""
        valid = [st for st, (rec, _, _) in self.entries.items() if self._valid(st, rec, stage_of, states)]
        if not valid:
            return None
        stage = max(valid)
        self.entries.move_to_end(stage)
        return stage

    def acts(self, stage: int) -> list[torch.Tensor]:
        return self.entries[stage][1]

    def store(
        self, stage: int, states: dict[str, tuple], acts: list[torch.Tensor], stage_of: dict[str, int]
    ) -> None:
        size = sum(a.numel() * a.element_size() for a in acts)
        self.entries.pop(stage, None)
        if size > self.limit:
            return
        used = sum(e[2] for e in self.entries.values())
        # make room: first entries that no longer fit the current weights, then the least recently used
        stale = [st for st, (rec, _, _) in self.entries.items() if not self._valid(st, rec, stage_of, states)]
        for st in stale:
            if used + size <= self.limit:
                break
            used -= self.entries.pop(st)[2]
        while self.entries and used + size > self.limit:
            used -= self.entries.popitem(last=False)[1][2]
        self.entries[stage] = (dict(states), acts, size)

    def clear(self) -> None:
        self.entries.clear()


def _too_long(why: str) -> EvaluationError:
    return EvaluationError(
        f"the evaluation was stopped: it {why}. The model's forward may hang on these inputs; the app keeps "
        "working, and the next change is evaluated again (or raise time_limit for a slow model).")


class LiveEvaluator:
    """Evaluate ``session``'s model on ``data`` after every change, progressively, in a worker thread.

    ``prefix_cache``: reuse the activations entering the first changed stage (at most ``cache_mb`` MB;
    models that are not a chain of stages always run whole). ``time_limit``: seconds one evaluation may run
    before it is interrupted and reported as an error (a model whose forward hangs; Python-level code is
    interrupted at once, a long C call when it returns); None: no limit. Other keyword arguments go to
    :class:`Evaluator` (subset_size, first_chunk, chunk_size, metric_fn, ...).
    """

    #: final results kept per weight state, so going back to a recent state answers at once
    MAX_FINALS = 32

    def __init__(
        self,
        session: PruningSession,
        data: Any,
        *,
        prefix_cache: bool = True,
        cache_mb: float = 256,
        start: bool = True,
        time_limit: float | None = 120.0,
        background_baseline: bool = False,
        **evaluator_kwargs: Any,
    ) -> None:
        self.session = session
        #: seconds one evaluation may take before it is stopped and reported (a forward that hangs)
        self.time_limit = time_limit
        with session.lock:
            self._model = copy.deepcopy(session.model).eval()
            self._states = {n: ("dense", session.base_version) for n in session.names}  # it holds the originals
            self._base_version = session.base_version
            with torch.no_grad():  # the baseline is the unpruned model
                for t in session.targets:
                    get_tensor(self._model, t.name).copy_(session.original(t.name))
                    for name in session.channel_tensors(t.name):  # bias, BatchNorm scale and shift
                        get_tensor(self._model, name).copy_(session.original_tensor(name))
        # background_baseline: the unpruned model is measured by the worker, first (a big model's full forward
        # takes seconds): until then ``baseline_ready`` is False and reading ``baseline`` waits for it
        self.evaluator = Evaluator(self._model, data, defer_baseline=background_baseline, **evaluator_kwargs)
        self._staged = StagedModel(self._model) if prefix_cache else None
        # the first stage each layer's change touches: its module's, or that of a tensor changed with it (the
        # BatchNorm after it in structured scope) if that came earlier
        self._stage_of = (
            {
                t.name: min(
                    self._staged.stage_of(m)
                    for m in [t.module_name, *(x.rsplit(".", 1)[0] for x in session.channel_tensors(t.name))]
                )
                for t in session.targets
            }
            if self._staged is not None and self._staged.ok
            else {}
        )
        # stages whose input the forward modifies in place: an activation cached there would not stay valid
        self._no_cache: set[int] = set()
        example = self.evaluator.example_input(2)
        if not isinstance(example, torch.Tensor):
            self._stage_of = {}  # staged runs take one tensor; other inputs (dicts, image lists) run whole
        if self._stage_of:
            try:
                self._no_cache = self._staged.mutated_inputs(example)
            except Exception:  # noqa: BLE001 - cannot tell: run whole
                log.warning("pruneviz: the in-place check of the model's stages failed; prefix cache off")
                self._stage_of = {}
        self._cache = _PrefixCache(int(cache_mb * 2**20))
        # BatchNorm running statistics are not session tensors: they are copied at every job, and their content is
        # part of the weight state (a re-calibration changes them; its undo gives the cached results back)
        self._stats = _norm_buffers(self._model)
        self._stats_token = _token(self._stats)
        # final results by weight state (all layers' states): equal states mean equal weights
        self._dense_key = self._key()
        self._finals: OrderedDict[tuple, EvalResult] = OrderedDict(
            [(self._dense_key, self.baseline)] if self.baseline_ready else [])
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
            self.start()

    def start(self) -> None:
        """Start the worker (``start=False`` at creation: e.g. once the views listening to it are built)."""
        if not self._thread.is_alive() and not self._closed:
            self._thread.start()
            self.request()

    # ------------------------------------------------------------------ public
    @property
    def baseline(self) -> EvalResult:
        """The unpruned model's result (waits for it while the worker measures it: ``background_baseline``)."""
        return self.evaluator.baseline

    @property
    def baseline_ready(self) -> bool:
        return self.evaluator.baseline_ready

    def on_event(self, listener: LiveListener) -> Callable[[], None]:
        """Call ``listener(LiveEvent)`` for status changes, results and errors; returns an unsubscriber.

        Listeners run in the worker thread while it holds the session's lock (so the generation they are
        told about is the session's current one): keep them short and do not wait for other threads there.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def request(self) -> None:
        """Evaluate the session's current weights (done automatically after every change; call it to retry
        after an error whose cause you fixed outside the session)."""
        with self._cond:
            self._wanted = max(self._wanted, self.session.generation)
            self._done = min(self._done, self._wanted - 1)  # run again even if this generation was done
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the current generation has a final result or an error (True), or the timeout passes
        (False; also False once closed)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed
                or (
                    self.status == "idle"
                    and self._wanted == self.session.generation
                    and self._done == self._wanted
                ),
                timeout,
            )
            return (
                not self._closed
                and self.status == "idle"
                and self._wanted == self.session.generation
                and self._done == self._wanted
            )

    def close(self, timeout: float = 10.0) -> None:
        """Stop listening to the session and stop the worker (a job in flight stops after its chunk)."""
        self._unsubscribe()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def prefix_cache_active(self) -> bool:
        return bool(self._stage_of)

    # --------------------------------------------------------------- internals
    def _key(self) -> tuple:
        return (self._stats_token, *(self._states[n] for n in self.session.names))

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
        self._report(LiveEvent("status", generation, status=status))

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted > self._done)
                if self._closed:
                    return
            self._job()

    def _sync(self) -> tuple[int, list[str]]:
        """Copy the changed layers' weights into the private model (under the session lock)."""
        s = self.session
        changed = []
        with s.lock, torch.no_grad():
            generation = s.generation
            if s.base_version != self._base_version:  # fine-tuned: every parameter and buffer may differ
                self._model.load_state_dict(s.model.state_dict())
                self._base_version = s.base_version
                self._states = {n: ("stale",) for n in s.names}
            for t in s.targets:
                state = s.layer_state(t.name)
                if state != self._states[t.name]:
                    get_tensor(self._model, t.name).copy_(get_tensor(s.model, t.name))
                    for name in s.channel_tensors(t.name):
                        get_tensor(self._model, name).copy_(get_tensor(s.model, name))
                    self._states[t.name] = state
                    changed.append(t.name)
            theirs = dict(s.model.named_buffers())
            for name, mine in self._stats.items():  # BatchNorm statistics (re-calibrated, or put back)
                if name in theirs and not torch.equal(mine, theirs[name]):
                    mine.copy_(theirs[name])
            token = _token(self._stats)
            if token != self._stats_token:
                self._stats_token = token
                self._cache.clear()  # the cached activations were computed with the other statistics
                changed = list(s.names)
        return generation, changed

    def _current(self, generation: int) -> bool:
        return not self._closed and self.session.generation == generation

    def _report(self, event: LiveEvent) -> bool:
        """Report ``event`` only if its generation is still current (checked and reported under the lock)."""
        with self.session.lock:
            if not self._current(event.generation):
                return False
            if event.result is not None:
                self.latest = event.result
                if event.result.final:
                    self.latest_final = event.result
                    self.last_error = None
            if event.kind == "error":
                self.last_error = event.error
            self._emit(event)
            return True

    def _finish(self, generation: int) -> None:
        with self._cond:
            self._done = max(self._done, generation)
        if self._current(generation):
            self._set_status("idle", generation)

    def _job(self) -> None:
        generation = self.session.generation
        try:
            if not self.evaluator.baseline_ready:  # measured first, while the private model is still unpruned
                self._set_status("busy", generation)
                with WorkGuard(self.time_limit, None, _too_long):
                    base = self.evaluator.measure_baseline(self._model)
                self._finals[self._dense_key] = base
            generation, changed = self._sync()
            self._set_status("busy", generation)
            key = self._key()
            known = self._finals.get(key)
            if known is not None:  # same weights as a recent final answer (undo, reset, a no-op change)
                self._finals.move_to_end(key)
                self._report(LiveEvent("result", generation, result=known.with_generation(generation)))
                return
            self._evaluate(generation, changed, key)
        except Exception as e:  # noqa: BLE001 - shown to the user as an error event; the worker lives on
            if not isinstance(e, EvaluationError):
                log.exception("pruneviz: live evaluation failed")
            message = (
                str(e) if isinstance(e, EvaluationError) else f"evaluation failed: {type(e).__name__}: {e}"
            )
            self._report(LiveEvent("error", generation, error=message))
        finally:
            self._finish(generation)

    def _evaluate(self, generation: int, changed: list[str], key: tuple) -> None:
        stage_of, staged = self._stage_of, self._staged
        start = capture = None
        if stage_of and staged is not None:
            start = self._cache.best(stage_of, self._states)
            dirty = min((stage_of[n] for n in changed), default=0)
            if dirty > (start or 0) and dirty not in self._no_cache:
                capture = dirty  # the next move of this layer restarts here
        acts = self._cache.acts(start) if start is not None else None
        captured: list[torch.Tensor] = []

        def forward(i: int, xb: Any) -> Any:
            if staged is None or not stage_of:
                return call_model(self._model, xb)
            if acts is not None:
                out, cap = staged.run(xb, start, acts[i], capture)
            else:
                out, cap = staged.run(xb, 0, None, capture)
            if cap is not None:
                captured.append(cap)
            return out

        results = self.evaluator.run(forward)
        try:
            with WorkGuard(self.time_limit, None, _too_long):
                self._report_results(results, generation, key)
        finally:
            results.close()
        if capture is not None and len(captured) == len(self.evaluator.bounds):
            self._cache.store(capture, self._states, captured, stage_of)

    def _report_results(self, results: Any, generation: int, key: tuple) -> None:
        """Report each chunk's result while its generation is current; keep the final one."""
        for result in results:
            if not self._current(generation):
                return  # stale: a newer plan is waiting; its job starts at once
            result = result.with_generation(generation)
            if not self._report(LiveEvent("result", generation, result=result)):
                return
            if result.final:
                self._finals[key] = result
                while len(self._finals) > self.MAX_FINALS:
                    self._finals.popitem(last=False)


def _norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of every BatchNorm of ``model``, by buffer name."""
    out = {}
    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            for bname, b in m.named_buffers(recurse=False):
                out[f"{mname}.{bname}" if mname else bname] = b
    return out


def _token(buffers: dict[str, torch.Tensor]) -> str:
    """A digest of the buffers' contents (equal statistics give equal tokens)."""
    h = hashlib.blake2b(digest_size=16)
    for t in buffers.values():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
