"""Fast tests of pruneviz.lessons without a kernel: the numbers the lessons compute, the widgets' wiring,
and the notebooks' shape (generated from scripts/make_lessons.py, thin, with the required sections)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from pruneviz.lessons import common as C
from pruneviz.lessons import criteria, finetune, scope, sensitivity, structured, what_is_pruning

FAST_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def figure_widgets(widget) -> list:
    """Every FigureWidget in a widget tree."""
    found, stack = [], [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, go.FigureWidget):
            found.append(w)
        stack.extend(getattr(w, "children", ()))
    return found


# ------------------------------------------------------------------------------------------------- common
def test_last_within_stops_at_the_first_loss():
    levels = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert C.last_within(levels, [0.98, 0.98, 0.975, 0.90, 0.98], 0.98) == 0.2  # the lucky 0.4 does not count
    assert C.last_within(levels, [0.98, 0.5, 0.98, 0.98, 0.98], 0.98) == 0.0
    assert C.last_within(levels, [0.98] * 5, 0.98) == 0.4


def test_sparsity_levels_and_formatting():
    lv = C.sparsity_levels()
    assert lv[0] == 0.0 and lv[-1] == 0.99 and np.all(np.diff(lv) > 0)
    assert C.pct(0.9861) == "98.6 %" and C.points(-0.0278) == "-2.8 pts"
    assert math.isclose(C.compression(0.9), 10.0)


def test_finding_renders_html_and_text():
    f = C.Finding("t", "Someone et al. 2020", "paper <b>1</b>", "ours<br>two", "v", {"x": 1.0})
    html = f._repr_html_()
    assert "From the literature" in html and "Someone et al. 2020" in html and "computed just now" in html
    text = str(f)
    assert "<b>" not in text and "ours\ntwo" in text


class _Guarded:
    def __init__(self):
        self.error = C.error_area()

    @C.guarded()
    def boom(self):
        raise ValueError("no <script>")

    @C.guarded()
    def fine(self):
        return 42


def test_guarded_shows_errors_instead_of_raising():
    g = _Guarded()
    assert g.boom() is None
    assert "ValueError" in g.error.value and "&lt;script&gt;" in g.error.value
    assert g.error.layout.display == ""
    assert g.fine() == 42
    assert g.error.value == "" and g.error.layout.display == "none"


def test_updates_are_in_the_synced_state_for_late_front_ends():
    """Voila connects after the notebook ran: the figure's synced state must hold the data, not the empty
    figure it was built as."""
    app = what_is_pruning.widget(sparsity=0.5)
    try:
        data = app.fig._widget_data
        assert np.asarray(data[0]["z"]).shape == (30_000,)  # 1-D: sent as a binary buffer
        assert np.asarray(data[1]["z"]).mean() == pytest.approx(0.5, abs=1e-3)  # the grey veil: half pruned
        assert not np.isnan(np.asarray(data[0]["z"], dtype=float)).any()  # NaN is not valid JSON
        assert "hole" in app.fig._widget_layout["annotations"][1]["text"]
    finally:
        app.close()


# ------------------------------------------------------------------------------------------------ lesson 1
def test_magnitude_mask_leaves_a_hole_around_zero():
    from pruneviz.core import PruningSession

    s = PruningSession(C.demo_model("mlp"), criterion="magnitude", scope="layer")
    s.set_sparsity("fc2.weight", 0.6)
    pic = what_is_pruning.layer_picture(s, "fc2.weight")
    assert pic.weights.shape == (100, 300)
    assert pic.sparsity == pytest.approx(0.6, abs=1e-4)
    w = np.abs(pic.weights)
    assert w[~pic.mask].max() <= w[pic.mask].min()  # every pruned |w| below every kept |w|
    assert pic.threshold == pytest.approx(float(w[~pic.mask].max()))
    assert pic.kept_counts.sum() + pic.pruned_counts.sum() == 30_000
    assert pic.kept_counts.dtype == np.float32  # pre-binned, compact on the wire


def test_lesson1_finding_numbers():
    f = what_is_pruning.finding()
    n = f.numbers
    assert n["baseline"] > 0.95
    assert 0.3 <= n["whole_within_1pt"] < 1 - 1 / 12  # redundant, but not 12x without retraining
    assert n["fc2_within_1pt"] >= n["whole_within_1pt"]  # one layer alone tolerates more
    assert n["acc_at_12x"] < n["baseline"] - C.ONE_POINT
    assert "Han" in f.source


def test_lesson1_widget_updates_and_reports_errors():
    app = what_is_pruning.widget()
    try:
        assert len(figure_widgets(app)) == 1
        app.set(sparsity=0.5)
        assert app.session.layer_sparsity("fc2.weight") == pytest.approx(0.5)
        assert "15,000 of 30,000" in app.stats.value
        app.view.value = "mask"
        app.set(layer="fc1.weight", sparsity=0.9)
        assert app.session.layer_sparsity("fc2.weight") == 0.0  # only the picked layer is pruned
        assert app.session.layer_sparsity("fc1.weight") == pytest.approx(0.9)
        assert app.error.value == ""
        app.session.set_sparsity = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken session"))
        app.set(sparsity=0.3)  # must not raise
        assert "broken session" in app.error.value
    finally:
        app.close()


# ------------------------------------------------------------------------------------------------ lesson 2
@pytest.fixture(scope="module")
def criteria_curves():
    return {m: criteria.criteria_curves(m, ("magnitude", "random"), FAST_LEVELS, random_seeds=2)
            for m in criteria.MODELS}


def test_magnitude_beats_random_on_the_cnn(criteria_curves):
    cnn = criteria_curves["cnn"]
    assert cnn.acc["magnitude"][0] == pytest.approx(cnn.baseline)
    assert cnn.at("magnitude", 0.7) > cnn.at("random", 0.7) + 0.3  # at 70 % sparsity, by a wide margin
    assert cnn.within("magnitude") >= 0.3 and cnn.within("random") <= 0.1


def test_lesson2_finding(criteria_curves):
    f = criteria.finding(criteria_curves)
    n = f.numbers
    assert n["cnn_magnitude_within_1pt"] > n["cnn_random_within_1pt"]
    assert n["mlp_magnitude_within_1pt"] > n["mlp_random_within_1pt"]
    assert "Reproduced" in f.verdict


def test_lesson2_widget_computes_with_progress():
    app = criteria.CriteriaLesson(("magnitude", "random"), levels=(0.0, 0.5, 0.9))
    try:
        assert len(figure_widgets(app)) == 1
        assert app.progress in app.children[1].children  # the bar lives in the lesson's layout
        app.run()
        assert app.error.value == ""
        assert app.progress.value == app.progress.max == 2 * criteria.steps(("magnitude", "random"), (0, 0.5, 0.9))
        assert app.progress.bar_style == "success"
        app.look.value = 0.5
        assert "magnitude" in app.table.value
        assert "From the literature" in app.finding()._repr_html_()
    finally:
        app.close()


# ------------------------------------------------------------------------------------------------ lesson 3
def test_global_beats_uniform_and_collapses_a_layer():
    c = scope.scope_curves("mlp", levels=(0.0, 0.5, 0.8, 0.9, 0.98, 0.995))
    i80 = 2
    assert c.acc["global"][i80] > c.acc["layer"][i80]
    # the implied per-layer sparsities add up to the total
    for i, v in enumerate(c.levels):
        total = np.dot(c.implied[i], c.sizes) / sum(c.sizes)
        assert total == pytest.approx(v, abs=1e-4)
    hit = c.first_collapse()
    assert hit is not None and hit[0] >= 0.9
    assert c.implied[-1].max() >= scope.COLLAPSE


def test_lesson3_widget_flags_collapse():
    app = scope.widget("mlp", 0.5)
    try:
        assert len(figure_widgets(app)) == 1
        assert app.slider.continuous_update is False
        assert "Layer collapse" not in app.stats.value
        app.set(sparsity=0.995)
        assert "Layer collapse" in app.stats.value and app.error.value == ""
        assert C.DANGER in list(app.fig.data[1].marker.color)
    finally:
        app.close()


# ------------------------------------------------------------------------------------------------ lesson 4
@pytest.fixture(scope="module")
def lab():
    return structured.StructuredLab()


def test_flops_fall_faster_than_zeros(lab):
    p = lab.point("l1_filter", 0.25)
    assert p.zeros == pytest.approx(0.25, abs=0.02)
    assert p.flops_cut > p.zeros + 0.1  # a removed filter also removes the next layer's input
    assert p.flops_cut > p.sparse_flops_cut
    assert p.params_slim < p.params_dense
    assert p.filters["features.0.weight"] == (4, 16)
    assert lab.point("l1_filter", 0.0).flops_cut == 0.0


def test_l1_filters_beat_random_filters(lab):
    assert lab.point("l1_filter", 0.2).acc_slim > lab.point("random", 0.2).acc_slim


def test_kernel_mosaic_tiles_every_kernel_and_veils_the_removed(lab):
    s = lab.session("l1_filter", 0.25)
    keep = s.channel_mask("features.0.weight").numpy()
    weights, dim, index = structured.kernel_mosaic(s.original("features.0.weight"), keep)
    assert weights.shape == dim.shape == index.shape == (7, 31)
    assert sum(v is not None for v in weights.ravel()) == 16 * 9  # gaps are None (JSON null), never NaN
    assert sum(v is not None for v in dim.ravel()) == 9 * int((~keep).sum())
    assert {v for v in index.ravel() if v is not None} == set(range(16))
    assert weights[0, 0] == pytest.approx(float(s.original("features.0.weight")[0, 0, 0, 0]), abs=1e-4)


def test_lesson4_finding_and_widget(lab):
    f = structured.finding(lab)
    assert f.numbers["flops_cut"] >= structured.PAPER_FLOPS_CUT
    assert f.numbers["zeros"] < f.numbers["flops_cut"]
    app = structured.widget()
    try:
        assert len(figure_widgets(app)) == 1
        app.set(ratio=0.5, criterion="random", layer="features.7.weight")
        assert app.error.value == "" and "FLOPs per image" in app.stats.value
    finally:
        app.close()


# ------------------------------------------------------------------------------------------------ lesson 5
@pytest.fixture(scope="module")
def sweep_result():
    return sensitivity.sweep("structured")


def test_sensitivities_differ_and_the_plan_respects_the_budget(sweep_result):
    rank = sensitivity.ranking(sweep_result)
    assert rank[0][1] - rank[-1][1] > 0.2  # layers differ widely
    plan = sweep_result.suggest(0.02)
    layers, levels, drop = sweep_result.pivot("drop")
    for name, v in plan.items():
        if v > 0:
            assert drop[layers.index(name), list(levels).index(v)] <= 0.02 + 1e-9


def test_lesson5_plan_beats_uniform(sweep_result):
    f = sensitivity.finding(sweep_result)
    n = f.numbers
    assert n["plan_acc"] > n["uniform_acc"]
    assert abs(n["plan_flops_cut"] - n["uniform_flops_cut"]) < 0.1  # compared at about the same cost
    assert "Li" in f.source


def test_lesson5_widget_runs_the_core_sweep():
    app = sensitivity.widget()
    try:
        assert len(figure_widgets(app)) == 1
        assert app.budget.continuous_update is False
        app.run()
        assert app.error.value == "" and app.progress.value == app.progress.max > 0
        app.set(max_drop_points=5)
        assert "Per-layer plan" in app.stats.value
    finally:
        app.close()


# ------------------------------------------------------------------------------------------------ lesson 6
def test_collapse_then_recovery_keeps_the_mask():
    r = finetune.recover(ratio=0.7, epochs=2)
    assert r.pruned < r.dense - 0.3
    assert r.final > r.pruned + 0.4
    assert r.still_zero


def test_iterative_beats_oneshot_at_high_sparsity():
    c = finetune.compare_schedules(targets=(0.95,))
    assert c.acc["cubic"][0] > c.acc["oneshot"][0]


def test_lesson6_widget_is_wired():
    app = finetune.widget()
    try:
        assert len(figure_widgets(app)) == 1
        assert app.ratio.continuous_update is False
        app.epochs.value = 1
        app._on_recover(None)
        assert app.error.value == "" and app.recovery is not None and len(app.recovery.epochs) == 1
    finally:
        app.close()


# --------------------------------------------------------------------------------------------- notebooks
def test_notebooks_match_their_cell_lists():
    from scripts import make_lessons

    assert make_lessons.stale() == [], "run: python scripts/make_lessons.py"


def test_make_lessons_reuses_write_notebook():
    from scripts import make_lessons, make_notebook

    assert make_lessons.write_notebook is make_notebook.write_notebook


@pytest.mark.parametrize("name", sorted(__import__("scripts.make_lessons").make_lessons.LESSONS))
def test_notebooks_are_thin_and_complete(name):
    from scripts.make_lessons import LESSONS

    cells = LESSONS[name]
    code = [src for kind, src in cells if kind == "code"]
    md = "\n".join(src for kind, src in cells if kind == "md")
    assert len(code) == 2 and all(len(src.splitlines()) <= 4 for src in code)
    assert all("with " not in src for src in code)  # never `with out:`
    for heading in ("What to try", "What to notice", "From the literature"):
        assert heading in md
    assert "pruneviz.lessons" in code[0] and code[1] == "app.finding()"
