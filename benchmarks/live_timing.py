"""Timing helpers shared by the live benchmarks: quantiles, a result clock listening to a LiveEvaluator, and
the move loop that times slider change -> first estimate -> final result."""

from __future__ import annotations

import statistics
import threading
import time

from pruneviz.core import PruningSession
from pruneviz.core.live import LiveEvaluator, LiveEvent


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation (numpy's default)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"median": round(statistics.median(ms), 2), "p95": round(pct(ms, 0.95), 2),
            "min": round(min(ms), 2), "max": round(max(ms), 2)}


class Clock:
    """Listener recording, per generation, when the first estimate and the final result were reported."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.final: dict[int, float] = {}
        self.first_n: dict[int, int] = {}
        self.accuracy: dict[int, float] = {}
        self.results: dict = {}
        self.errors: list[str] = []
        self.done = threading.Condition()

    def __call__(self, event: LiveEvent) -> None:
        now = time.perf_counter()
        if event.kind == "error":
            self.errors.append(event.error or "")
        if event.kind != "result" or event.result is None:
            return
        g = event.generation
        self.first.setdefault(g, now)
        self.first_n.setdefault(g, event.result.n)
        if event.result.final:
            with self.done:
                self.final[g] = now
                self.accuracy[g] = event.result.value
                self.results[g] = event.result
                self.done.notify_all()

    def wait(self, generation: int, timeout: float = 120.0) -> None:
        with self.done:
            if not self.done.wait_for(lambda: generation in self.final or bool(self.errors), timeout):
                raise TimeoutError(f"no final result for generation {generation} within {timeout} s")
        if self.errors:
            raise RuntimeError(f"the LiveEvaluator reported an error: {self.errors[0]}")


def live_moves(
    session: PruningSession, live: LiveEvaluator, moves: list, apply, naive=None
) -> dict[str, list[float]]:
    """Time each move: slider change -> first estimate, -> final; also the session call alone. With
    ``naive(move) -> accuracy``, the naive loop runs right after each move (the worker idle), so both are
    measured under the same machine load (the comparison is paired, move by move)."""
    clock = Clock()
    unsubscribe = live.on_event(clock)
    assert live.wait_idle(120), "the LiveEvaluator did not settle"
    out: dict[str, list[float]] = {"first": [], "final": [], "update": [], "first_n": [], "accuracy": [],
                                   "naive": [], "naive_accuracy": [], "results": []}
    try:
        for i, move in enumerate(moves):
            t0 = time.perf_counter()
            event = apply(move)
            t_update = time.perf_counter() - t0
            clock.wait(event.generation)
            assert live.wait_idle(120), "the LiveEvaluator did not settle"
            t_naive = None
            if naive is not None:
                t1 = time.perf_counter()
                acc = naive(move)
                t_naive = time.perf_counter() - t1
            if i == 0:
                continue  # warm-up
            g = event.generation
            out["update"].append(t_update)
            out["first"].append(clock.first[g] - t0)
            out["final"].append(clock.final[g] - t0)
            out["first_n"].append(clock.first_n[g])
            out["accuracy"].append(clock.accuracy[g])
            out["results"].append(clock.results[g])
            if naive is not None:
                out["naive"].append(t_naive)
                out["naive_accuracy"].append(acc)
    finally:
        unsubscribe()
    return out
