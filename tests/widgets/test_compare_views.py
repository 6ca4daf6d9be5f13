"""The Compare and Find-a-plan views: work in the background, draw into their one FigureWidget, leave the
session's plan alone (Compare) or apply the plan found as an undoable change (Find a plan)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pruneviz.widgets.compare import MAX_SERIES, CompareView
from pruneviz.widgets.plan_view import PlanFinderView, PlanTraces


def state(app) -> tuple:
    s = app.session
    return ({k: v.clone() for k, v in s.model.state_dict().items()}, s.plan, s.generation, s.history_position)


def same(a: tuple, b: tuple) -> bool:
    return all(torch.equal(a[0][k], v) for k, v in b[0].items()) and a[1:] == b[1:]


def test_compare_races_in_the_background_and_leaves_the_plan(demo):
    app = demo
    app.session.set_global_sparsity(0.4)
    assert app.wait_idle(30)
    before = state(app)
    view = CompareView(app.ctx, sparsities=(0.5, 0.9))
    try:
        assert "pv-compare" in view._dom_classes
        assert "pv-compare-run" in view.job.run_button._dom_classes
        assert "pv-compare-progress" in view.job.progress._dom_classes
        fig = view.figure
        n_traces = len(fig.data)
        view.criteria.value = ("magnitude", "random", "lamp")
        view.scopes.value = ("global", "layer")
        view.seeds.value = 2
        view.job.run_button.click()
        assert view.wait(120)
        race = view.result
        assert race is not None and not race.cancelled and race.criteria == ("magnitude", "random", "lamp")
        assert same(before, state(app))  # the session's plan, weights and history are untouched
        assert view.job.progress.value == view.job.progress.max and view.job.progress.bar_style == "success"
        assert len(fig.data) == n_traces and fig in app.ctx.figures  # drawn in place, into the same figure
        curves = race.curves("weights")
        assert len(curves) == 6
        for i, c in enumerate(curves):
            assert fig.data[i].visible is True
            assert np.allclose(fig.data[i].y, [100 * v for v in c.y])
        assert all(fig.data[i].visible is False for i in range(len(curves), MAX_SERIES))
        gaps = fig.data[MAX_SERIES]
        assert list(gaps.y) == [f"{g.criterion} · {g.scope}" for g in race.gaps()]
        assert "Agreement with magnitude" in view.agreement.value
        view.axis.value = "flops"  # redraw on the other axis, no new traces
        flops = race.curves("flops")
        assert np.allclose(fig.data[0].x, flops[0].x) and len(fig.data) == n_traces
        assert app.errors.text == ""
    finally:
        view.close()


def test_compare_cancel_keeps_the_session(demo):
    app = demo
    before = state(app)
    view = CompareView(app.ctx, sparsities=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
    try:
        view.criteria.value = ("magnitude", "random", "taylor", "lamp")
        view.scopes.value = ("global", "layer", "structured")
        assert view.run()
        assert not view.run()  # one race at a time
        view.job.cancel_button.click()
        assert view.wait(120)
        assert view.result is not None and view.result.cancelled and len(view.result.rows) < 108
        assert "cancelled" in view.job.status.value and view.job.progress.bar_style == "warning"
        assert not view.job.running and not view.job.run_button.disabled and view.job.cancel_button.disabled
        assert same(before, state(app))
    finally:
        view.close()


def test_find_a_plan_applies_an_undoable_plan(demo):
    app = demo
    before = state(app)
    got = []
    view = PlanFinderView(app.ctx, levels=(0.3, 0.6, 0.9), on_iteration=got.append)
    try:
        assert "pv-plan-find" in view.job.run_button._dom_classes
        assert "pv-plan-progress" in view.job.progress._dom_classes
        view.tolerance.value = 1.0  # points of accuracy
        view.budget.value = 30
        view.job.run_button.click()
        assert view.wait(120)
        r = view.result
        assert r is not None and r.feasible and r.best.drop <= 0.01
        assert app.session.plan == r.plan  # applied at the end, as one ordinary change
        assert app.session.history_position == before[3] + 1
        fig = view.figure
        drawn = [it for it in r.iterations if it.action != "undo push"]
        assert len(fig.data[PlanTraces.PATH].x) == len(drawn) and got == drawn
        assert len(fig.data[PlanTraces.HOLDS].x) + len(fig.data[PlanTraces.FAILS].x) == len(drawn)
        assert fig.data[PlanTraces.BEST].x[0] == pytest.approx(100 * r.best.weights_removed, rel=1e-5)
        assert "features.0" in view.table.value
        assert app.wait_idle(30)
        app.session.undo()
        now = state(app)
        assert now[1] == before[1] and now[3] == before[3]
        assert all(torch.equal(before[0][k], v) for k, v in now[0].items())
        assert app.errors.text == ""
    finally:
        view.close()


def test_views_without_data_say_so(make_explorer):
    app = make_explorer(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), None)
    compare, finder = CompareView(app.ctx), PlanFinderView(app.ctx)
    try:
        assert compare.job.run_button.disabled and "no evaluation data" in compare.job.status.value
        assert finder.job.run_button.disabled and "no evaluation data" in finder.job.status.value
    finally:
        compare.close()
        finder.close()


def test_the_explorer_builds_its_tools_only_when_asked(demo):
    app = demo
    figures = len(app.ctx.figures)
    assert app.tools.views == {} and app.tools.slot.children == ()
    app.tools.buttons["compare"].value = True
    compare = app.tools.views["compare"]
    assert isinstance(compare, CompareView) and app.tools.slot.children == (compare,)
    assert len(app.ctx.figures) == figures + 1
    app.tools.buttons["plan"].value = True  # one tool at a time
    assert app.tools.buttons["compare"].value is False
    assert isinstance(app.tools.slot.children[0], PlanFinderView)
    app.tools.buttons["compare"].value = True
    assert app.tools.views["compare"] is compare  # built once
    assert app.errors.text == ""
