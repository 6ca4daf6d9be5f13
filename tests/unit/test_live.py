"""LiveEvaluator: progressive results in a worker thread that end exactly at the synchronous answer, no
result ever reported for a stale plan, masks never changed under a forward in flight, and faults reported
as error events after which evaluation carries on."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from live_helpers import CHUNKS, Recorder, assert_equal_results, settle, sync_eval, weights_hash

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.live import LiveEvaluator, LiveEvent
from pruneviz.data import load_demo_model

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture
def session():
    return PruningSession(load_demo_model("cnn"), scope="global")


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
