"""Shared by the LiveEvaluator tests: an event recorder, exact result comparison, settling, weight hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from torch import nn

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import EvalResult, Evaluator
from pruneviz.core.live import LiveEvaluator, LiveEvent

CHUNKS = {"first_chunk": 64, "chunk_size": 96}  # 360 digits -> 64, 160, 256, 352, 360: five chunks


class Recorder:
    """on_event listener: every event with the session's generation at the moment it was reported (the
    listener runs under the session's lock, so that is the generation in force)."""

    def __init__(self, session: PruningSession) -> None:
        self.session = session
        self.events: list[tuple[LiveEvent, int]] = []

    def __call__(self, event: LiveEvent) -> None:
        self.events.append((event, self.session.generation))

    def results(self, generation: int | None = None) -> list[EvalResult]:
        return [e.result for e, _ in self.events
                if e.kind == "result" and (generation is None or e.generation == generation)]

    def finals(self, generation: int) -> list[EvalResult]:
        return [r for r in self.results(generation) if r.final]

    def errors(self, generation: int | None = None) -> list[str]:
        return [e.error for e, _ in self.events
                if e.kind == "error" and (generation is None or e.generation == generation)]


def assert_equal_results(live: EvalResult, sync: EvalResult) -> None:
    """Exact equality of predictions and accuracy; the loss within 1e-6 relative (or exactly equal)."""
    assert live.final and sync.final and live.n == sync.n
    np.testing.assert_array_equal(live.predictions, sync.predictions)
    assert live.accuracy == sync.accuracy and live.top5 == sync.top5
    np.testing.assert_array_equal(live.confusion, sync.confusion)
    assert live.loss == sync.loss or abs(live.loss - sync.loss) <= 1e-6 * abs(sync.loss)
    assert live.custom.keys() == sync.custom.keys()
    for k, v in sync.custom.items():
        assert live.custom[k] == pytest.approx(v, rel=1e-6)


def settle(live: LiveEvaluator, timeout: float = 30) -> EvalResult:
    assert live.wait_idle(timeout), "the live evaluator did not finish"
    assert live.last_error is None, live.last_error
    final = live.latest_final
    assert final is not None and final.generation == live.session.generation
    return final


def sync_eval(session: PruningSession, data, **kwargs) -> EvalResult:
    return Evaluator(session.model, data, **kwargs).evaluate(session.model)


def weights_hash(model: nn.Module, names: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    params = dict(model.named_parameters())
    for n in names:
        h.update(params[n].detach().numpy().tobytes())
    return h.hexdigest()
