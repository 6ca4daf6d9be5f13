"""find_plan: the measured metric holds, the result is an ordinary (undoable) plan, the session is only read
during the search, the time budget stops it, bad input is refused."""

from __future__ import annotations

import time

import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.plan_finder import PlanSearchError, find_plan
from pruneviz.data.demos import DEMOS

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")
LEVELS = (0.2, 0.4, 0.6, 0.8, 0.9)


@pytest.fixture(scope="module")
def demo():
    d = DEMOS["cnn"]
    data, calib = d.data()
    return d.load(), data, calib


def weights(s: PruningSession) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in s.model.state_dict().items()}


def test_found_plan_holds_and_undo_goes_back(demo):
    model, data, calib = demo
    s = PruningSession(model, criterion="magnitude", scope="layer", calib_data=calib)
    s.set_sparsity("classifier.0.weight", 0.5)
    before, plan_before, gen = weights(s), s.plan, s.generation
    seen = []
    r = find_plan(s, data, tolerance=0.01, time_budget_s=30, levels=LEVELS,
                  progress=lambda d, t, info: seen.append(info["phase"]))
    # the search ran on a private copy: the session is exactly as it was
    assert s.plan == plan_before and s.generation == gen
    assert all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    assert r.feasible and r.stopped == "converged" and r.iterations[0].action == "start"
    assert "sweep" in seen and "search" in seen
    best = r.best
    assert best.drop <= 0.01 and best.weights_removed > 0.3
    assert set(r.plan.sparsity) == set(s.names) and r.plan.scope == "layer" and r.plan.criterion == "magnitude"
    assert all(v in r.levels for v in r.plan.sparsity.values())
    # every feasible plan measured removes at most what the best one removes (the objective: weights)
    assert all(it.weights_removed <= best.weights_removed + 1e-12 for it in r.iterations if it.feasible)
    # the measured value is what an independent evaluation of the applied plan gives
    s.apply_plan(r.plan)
    ev = Evaluator(s.model, data, first_chunk=512, chunk_size=512)
    assert s.summary().sparsity == pytest.approx(best.weights_removed)
    baseline = Evaluator(PruningSession(DEMOS["cnn"].load()).model, data).baseline.value
    assert ev.baseline.value == pytest.approx(best.value) and baseline - ev.baseline.value <= 0.01
    s.undo()
    assert s.plan == plan_before
    assert all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    s.reset()


def test_flops_objective_and_structured_scope(demo):
    model, data, _ = demo
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    r = find_plan(s, data, tolerance=0.03, objective="flops", time_budget_s=30, levels=(0.1, 0.2, 0.3, 0.5))
    assert r.plan.scope == "structured" and r.objective == "flops"
    assert r.plan.sparsity["classifier.2.weight"] == 0.0  # the output head is never a candidate
    assert r.feasible and r.best.drop <= 0.03
    # the objective is FLOPs: no plan measured within the tolerance has fewer FLOPs than the one returned
    assert all(it.flops >= r.best.flops for it in r.iterations if it.feasible)
    assert r.best.flops < 1232128  # the dense model's FLOPs
    assert s.plan.sparsity == dict.fromkeys(s.names, 0.0)


def test_time_budget_stops_the_search(demo):
    model, data, _ = demo
    s = PruningSession(model, scope="layer")
    t0 = time.perf_counter()
    r = find_plan(s, data, tolerance=0.0, time_budget_s=0.3, levels=LEVELS)
    assert time.perf_counter() - t0 < 10
    assert r.stopped in ("time budget", "converged")
    # nothing measured past the budget (one measurement may be in flight when it passes)
    assert all(it.elapsed < 0.3 + 5 for it in r.iterations)


def test_cancel_returns_at_once(demo):
    model, data, _ = demo
    s = PruningSession(model, scope="layer")
    r = find_plan(s, data, tolerance=0.01, cancel=lambda: True, levels=LEVELS)
    assert r.stopped == "cancelled" and r.iterations == [] and not r.feasible
    assert r.plan.sparsity == dict.fromkeys(s.names, 0.0)


def test_bad_input(demo):
    model, data, _ = demo
    s = PruningSession(model)
    for kwargs, match in (({"tolerance": -0.1}, "tolerance"), ({"tolerance": float("nan")}, "tolerance"),
                          ({"tolerance": 0.01, "objective": "speed"}, "objective"),
                          ({"tolerance": 0.01, "time_budget_s": 0}, "time_budget_s"),
                          ({"tolerance": 0.01, "scope": "global"}, "scope")):
        with pytest.raises(PlanSearchError, match=match):
            find_plan(s, data, **kwargs)
