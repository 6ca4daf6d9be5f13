"""LiveEvaluator: progressive results in a worker thread that end exactly at the synchronous answer, no
result ever reported for a stale plan, masks never changed under a forward in flight, and faults reported
as error events after which evaluation carries on."""

from __future__ import annotations

import hashlib
import random
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruneviz.core import EvaluationError, PruningSession
from pruneviz.core.evaluate import EvalResult, Evaluator
from pruneviz.core.live import LiveEvaluator, LiveEvent
from pruneviz.data import load_demo_model

CHUNKS = {"first_chunk": 64, "chunk_size": 96}  # 360 digits -> 64, 160, 256, 352, 360: five chunks


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture
def session():
    return PruningSession(load_demo_model("cnn"), scope="global")


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


# ----------------------------------------------------------------- basics
def test_baseline_and_first_result(session, digits):
    session.set_global_sparsity(0.5)  # already pruned when the live evaluator starts
    live = LiveEvaluator(session, digits, **CHUNKS)
    try:
        unpruned = Evaluator(load_demo_model("cnn"), digits, **CHUNKS).baseline
        assert_equal_results(live.baseline, unpruned)  # the baseline is the unpruned model
        assert_equal_results(settle(live), sync_eval(session, digits, **CHUNKS))
        assert live.status == "idle" and live.latest is live.latest_final
        assert live.evaluator.total == 360 and len(live.evaluator.bounds) == 5
    finally:
        live.close()
    assert not live._thread.is_alive()
    assert live.wait_idle(0.1) is False  # closed


def test_progressive_events_end_at_the_synchronous_value(session, digits):
    live = LiveEvaluator(session, digits, **CHUNKS)
    rec = Recorder(session)
    live.on_event(rec)
    try:
        settle(live)
        for value in (0.3, 0.7, 0.9):
            g = session.set_global_sparsity(value).generation
            final = settle(live)
            steps = rec.results(g)
            assert [r.n for r in steps] == [64, 160, 256, 352, 360]
            assert steps[-1] is final and [r.final for r in steps] == [False] * 4 + [True]
            assert all(r.generation == g for r in steps)
            sync = sync_eval(session, digits, **CHUNKS)
            assert_equal_results(final, sync)
            for r in steps:  # every estimate is the metric of a prefix of the same predictions
                np.testing.assert_array_equal(r.predictions, sync.predictions[: r.n])
            kinds = [(e.kind, e.status) for e, _ in rec.events if e.generation == g]
            assert kinds[0] == ("status", "busy") and kinds[-1] == ("status", "idle")
            np.testing.assert_array_equal(
                final.changed, np.flatnonzero(final.predictions != live.baseline.predictions))
    finally:
        live.close()


def test_undo_redo_reset_answer_from_recent_results(session, digits):
    live = LiveEvaluator(session, digits, **CHUNKS)
    rec = Recorder(session)
    live.on_event(rec)
    try:
        session.set_global_sparsity(0.6)
        a = settle(live)
        session.set_global_sparsity(0.85)
        b = settle(live)
        g = session.undo().generation
        again = settle(live)
        assert again.generation == g and len(rec.results(g)) == 1  # one answer, at once
        assert_equal_results(again, a)
        session.redo()
        assert_equal_results(settle(live), b)
        session.reset()
        assert_equal_results(settle(live), live.baseline)
        assert_equal_results(live.latest_final, sync_eval(session, digits, **CHUNKS))
    finally:
        live.close()


def test_unsubscribe_listener(session, digits):
    live = LiveEvaluator(session, digits)
    rec = Recorder(session)
    off = live.on_event(rec)
    try:
        settle(live)
        off()
        n = len(rec.events)
        session.set_global_sparsity(0.4)
        settle(live)
        assert len(rec.events) == n
    finally:
        live.close()


# ----------------------------------------------------------------- staleness
def test_burst_of_1000_changes_reports_only_current_plans(session, digits):
    """1,000 slider changes from the main thread as fast as possible: exactly one final result for the last
    generation, equal to a synchronous evaluation of the last plan, and no event of any kind was ever
    reported for a generation that was no longer current."""
    live = LiveEvaluator(session, digits, **CHUNKS)
    rec = Recorder(session)
    live.on_event(rec)
    rng = random.Random(0)
    names = session.names
    try:
        settle(live)
        for i in range(1000):
            if i % 3:
                session.set_global_sparsity(rng.uniform(0.0, 0.95))
            else:
                session.set_sparsity(rng.choice(names), rng.uniform(0.0, 0.95))
        last = session.generation
        final = settle(live)
        assert last >= 1000 and final.generation == last
        assert len(rec.finals(last)) == 1 and rec.finals(last)[0] is final
        assert_equal_results(final, sync_eval(session, digits, **CHUNKS))
        results = [(e, g) for e, g in rec.events if e.kind == "result"]
        assert results
        for event, generation_then in rec.events:
            assert event.generation == generation_then, "an event was reported for a stale plan"
            assert event.kind != "error", event.error
        for event, _ in results:
            assert event.result.generation == event.generation
        per_generation = {}
        for event, _ in results:
            if event.result.final:
                per_generation[event.generation] = per_generation.get(event.generation, 0) + 1
        assert max(per_generation.values()) == 1  # never two finals for one plan
    finally:
        live.close()


def test_stale_job_never_reports_an_older_final_for_newer_weights(session, digits):
    """Regression: a job that stopped as stale left the private model at plan A; when the session came back
    to A, the next job found 'nothing changed' and re-reported the last final (of another plan)."""
    live = LiveEvaluator(session, digits, **CHUNKS)
    done = threading.Event()

    def interfere(event: LiveEvent) -> None:
        # runs in the worker, under the session lock: two changes while the job for 0.9 is in flight
        if event.kind == "result" and not event.result.final and not done.is_set():
            done.set()
            session.set_global_sparsity(0.3)
            session.set_global_sparsity(0.9)

    try:
        settle(live)  # the unpruned baseline is the latest final
        live.on_event(interfere)
        session.set_global_sparsity(0.9)
        final = settle(live)
        assert done.is_set() and session.generation == 3
        assert_equal_results(final, sync_eval(session, digits, **CHUNKS))
        assert final.accuracy < live.baseline.accuracy - 0.2
    finally:
        live.close()


@pytest.mark.parametrize("prefix_cache", [False, True], ids=["whole-forward", "prefix-cache"])
def test_no_mask_change_under_a_forward_in_flight(digits, prefix_cache):
    """Checksum the private model's weights at the start and the end of every forward (with a pause in
    between) while the main thread hammers the session: they match, and they are the session's weights for
    the generation the job synced. With the prefix cache a forward runs stage by stage (the root module's
    hooks do not fire), so the hooks go on the stages: the first stage run opens a forward, the last
    closes it."""
    session = PruningSession(load_demo_model("cnn"), scope="layer")
    names = session.names
    expected = {session.generation: weights_hash(session.model, names)}
    live = LiveEvaluator(session, digits, prefix_cache=prefix_cache, first_chunk=32, chunk_size=32)
    assert live.prefix_cache_active is prefix_cache
    job = {"generation": None}
    sync = live._sync

    def recording_sync():
        generation, changed = sync()
        job["generation"] = generation
        return generation, changed

    live._sync = recording_sync
    seen: list[tuple[int, str, str]] = []
    start: dict = {}
    first_modules = []
    model = live._model

    def pre(module, args):
        if "hash" not in start:  # the first stage of this forward
            start["hash"] = weights_hash(model, names)
            first_modules.append(module)
            time.sleep(0.002)  # widen the window for a change to slip in

    def post(module, args, out):
        seen.append((job["generation"], start.pop("hash"), weights_hash(model, names)))

    if prefix_cache:
        stages = [model.get_submodule(n.target) for n in live._staged.nodes if n.op == "call_module"]
        for m in stages:
            m.register_forward_pre_hook(pre)
        stages[-1].register_forward_hook(post)
    else:
        model.register_forward_pre_hook(pre)
        model.register_forward_hook(post)
    rng = random.Random(1)
    try:
        settle(live)
        event = session.set_sparsity(names[-2], 0.5)  # caches the activations entering the head
        expected[event.generation] = weights_hash(session.model, names)
        settle(live)
        for i in range(300):
            if i % 10 == 9:
                event = session.set_global_sparsity(rng.uniform(0, 0.95))
            else:  # mostly the head: forwards that start from cached activations
                event = session.set_sparsity(rng.choice(names[-2:]), rng.uniform(0, 0.95))
            expected[event.generation] = weights_hash(session.model, names)
            time.sleep(rng.choice([0, 0, 0.001, 0.003, 0.03]))  # now and then a job completes
        settle(live)
        for value in (0.2, 0.4, 0.6):  # settled moves of the last layer: forwards that resume from the cache
            event = session.set_sparsity(names[-1], value)
            expected[event.generation] = weights_hash(session.model, names)
            settle(live)
        final = settle(live)
        assert_equal_results(final, sync_eval(session, digits, first_chunk=32, chunk_size=32))
    finally:
        live.close()
    assert len(seen) > 50 and len({g for g, _, _ in seen}) > 10, (len(seen), len({g for g, _, _ in seen}))
    for generation, before, after in seen:
        assert before == after, f"weights changed during a forward of generation {generation}"
        assert before == expected[generation], f"the forward of generation {generation} used other weights"
    if prefix_cache:  # some forwards started from cached activations, past the first stage
        assert sum(m is not stages[0] for m in first_modules) >= 2 * 12  # the last two settled moves


# ----------------------------------------------------------------- faults
class Faulty(nn.Module):
    """Identity that raises when the class flag is set (a flag the private copy shares)."""

    fail = False

    def forward(self, x):
        if Faulty.fail:
            raise RuntimeError("sensor offline")
        return x


def faulty_model(chain: bool) -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), Faulty())
    if chain:
        return body.eval()

    class Wrapper(nn.Module):  # a skip connection: not a chain, runs whole
        def __init__(self):
            super().__init__()
            self.body = body
            self.skip = nn.Linear(64, 10)

        def forward(self, x):
            return self.body(x) + self.skip(x.flatten(1))

    return Wrapper().eval()


@pytest.mark.parametrize("chain", [True, False], ids=["prefix-cache", "whole-forward"])
def test_model_that_raises_gives_an_error_event_and_recovers(chain, digits):
    session = PruningSession(faulty_model(chain))
    live = LiveEvaluator(session, digits, **CHUNKS)
    assert live.prefix_cache_active is chain
    rec = Recorder(session)
    live.on_event(rec)
    names = session.names
    try:
        settle(live)
        Faulty.fail = True
        g = session.set_sparsity(names[-1], 0.5).generation
        assert live.wait_idle(30)
        assert live.status == "idle" and live.latest_final.generation < g
        errors = rec.errors(g)
        assert len(errors) == 1 and errors == [live.last_error]
        assert "the model raised during evaluation: RuntimeError: sensor offline" in errors[0]
        assert rec.results(g) == []
        # session and weights are consistent: the plan is in force, the private copy holds its weights
        assert session.plan.sparsity[names[-1]] == 0.5
        assert session.layer_sparsity(names[-1]) == pytest.approx(0.5, abs=1e-3)
        assert weights_hash(live._model, names) == weights_hash(session.model, names)

        Faulty.fail = False
        session.set_sparsity(names[0], 0.4)  # the next valid change evaluates normally
        assert_equal_results(settle(live), sync_eval(session, digits, **CHUNKS))
        Faulty.fail = True
        session.set_sparsity(names[0], 0.6)
        assert live.wait_idle(30) and live.last_error is not None
        Faulty.fail = False
        live.request()  # retry without a change, after fixing the cause outside the session
        assert_equal_results(settle(live), sync_eval(session, digits, **CHUNKS))
    finally:
        Faulty.fail = False
        live.close()


def test_custom_metric_that_raises_or_returns_nan(session, digits):
    mode = {"value": "ok"}

    def metric(out, y):
        if mode["value"] == "raise":
            raise ZeroDivisionError("division by zero")
        if mode["value"] == "nan":
            return {"f1": float("nan")}
        return {"f1": float((out.argmax(1) == y).float().mean())}

    live = LiveEvaluator(session, digits, metric_fn=metric, **CHUNKS)
    rec = Recorder(session)
    live.on_event(rec)
    try:
        settle(live)
        mode["value"] = "raise"
        g = session.set_global_sparsity(0.5).generation
        assert live.wait_idle(30)
        assert rec.errors(g) == [live.last_error]
        assert "your metric_fn raised ZeroDivisionError: division by zero" in live.last_error
        mode["value"] = "nan"
        g = session.set_global_sparsity(0.6).generation
        assert live.wait_idle(30)
        assert len(rec.errors(g)) == 1 and "your metric_fn returned f1=nan" in live.last_error
        mode["value"] = "ok"
        session.set_global_sparsity(0.7)
        final = settle(live)
        assert final.custom["f1"] == pytest.approx(final.accuracy)
        assert_equal_results(final, sync_eval(session, digits, metric_fn=metric, **CHUNKS))
    finally:
        live.close()


class Poison(nn.Module):
    """Identity, or NaN outputs when the class flag is set."""

    on = False

    def forward(self, x):
        return x * float("nan") if Poison.on else x


def test_non_finite_outputs_give_an_error_event(digits):
    torch.manual_seed(0)
    session = PruningSession(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Poison()).eval())
    live = LiveEvaluator(session, digits)
    try:
        settle(live)
        Poison.on = True
        session.set_global_sparsity(0.3)
        assert live.wait_idle(30)
        assert "the loss is nan" in live.last_error and "not finite" in live.last_error
        Poison.on = False
        session.set_global_sparsity(0.4)
        assert_equal_results(settle(live), sync_eval(session, digits))
    finally:
        Poison.on = False
        live.close()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((torch.randn(20, 3, 32, 32), torch.randint(0, 10, (20,))), r"inputs of shape \(3, 32, 32\)"),
        ((torch.randn(20, 1, 8, 8).double(), torch.randint(0, 10, (20,))), "dtype torch.float64"),
        ((torch.randn(20, 1, 8, 8), torch.arange(20) % 10 + 5), "labels range from 5 to 14"),
        ((torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)), "empty"),
    ],
    ids=["shape", "dtype", "labels", "empty"],
)
def test_bad_evaluation_data_is_refused_up_front(session, data, match):
    listeners = len(session._listeners)
    with pytest.raises(EvaluationError, match=match):
        LiveEvaluator(session, data)
    assert len(session._listeners) == listeners  # nothing left subscribed
    session.set_global_sparsity(0.5)  # the session is unaffected


# ----------------------------------------------------------------- regression
def test_regression_with_custom_task_and_metric():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)).eval()
    x = torch.randn(400, 6)
    y = x[:, :1] - 0.5 * x[:, 1:2]

    def metric(out, target):
        return {"mae": float((out - target).abs().mean())}

    kwargs = {"task": "custom", "loss_fn": F.mse_loss, "metric_fn": metric,
              "first_chunk": 50, "chunk_size": 100}
    session = PruningSession(model)
    live = LiveEvaluator(session, (x, y), **kwargs)
    rec = Recorder(session)
    live.on_event(rec)
    try:
        assert live.baseline.accuracy is None and "mae" in live.baseline.custom
        for name in session.names:
            g = session.set_sparsity(name, 0.7).generation
            final = settle(live)
            assert [r.n for r in rec.results(g)] == [50, 150, 250, 350, 400]
            assert final.accuracy is None and final.predictions is None
            assert_equal_results(final, sync_eval(session, (x, y), **kwargs))
        assert final.custom["mae"] != live.baseline.custom["mae"]
    finally:
        live.close()
