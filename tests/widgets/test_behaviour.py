"""Behaviour: undo/redo/reset, sync without feedback loops, errors shown (never raised), export, no leaks."""

from __future__ import annotations

import threading

import numpy as np
import torch
from widget_helpers import Flaky, move

from pruneviz.widgets.testing import live_widget_count, record_traffic


def texts(app) -> tuple[str, ...]:
    return (app.accuracy.text, app.accuracy.label.value, app.headline.text, app.summary.value,
            app.allocation.warning.value, app.changes.header.value)


def test_undo_redo_reset_restore_the_baseline_exactly(demo):
    app = demo
    c = app.controls
    assert c.undo_button.disabled and c.redo_button.disabled
    baseline = texts(app)
    hist = app.histogram.kept_counts.copy()
    move(app, 0.5)
    move(app, 0.8)
    assert texts(app) != baseline
    assert not c.undo_button.disabled
    c.undo_button.click()
    assert app.wait_idle(30)
    assert c.global_slider.value == 50 and not c.redo_button.disabled
    c.undo_button.click()
    assert app.wait_idle(30)
    assert texts(app) == baseline
    assert np.array_equal(app.histogram.kept_counts, hist)
    assert c.global_slider.value == 0.0 and c.undo_button.disabled
    c.redo_button.click()
    assert app.wait_idle(30)
    assert c.global_slider.value == 50
    c.reset_button.click()
    assert app.wait_idle(30)
    assert texts(app) == baseline
    s = app.session
    for t in s.targets:
        assert torch.equal(s.model.get_parameter(t.name), s.original(t.name))
    assert not c.undo_button.disabled  # reset is undoable


def test_sliders_stay_in_sync_without_feedback_loops(demo):
    app = demo
    s, c = app.session, app.controls
    g0 = s.generation
    move(app, 0.7)
    assert s.generation == g0 + 1, "exactly one session change per slider move"
    implied = s.layer_sparsities()
    for name, slider in c.layer_sliders.items():
        assert slider.value == round(100 * implied[name], 6)
    # moving one layer slider in global scope switches to per-layer scope, from the implied sparsities
    c.layer_sliders["features.3.weight"].set_state({"value": 20})
    assert app.wait_idle(30)
    assert s.generation == g0 + 2
    assert s.plan.scope == "layer" and c.scope.value == "layer"
    assert s.plan.sparsity["features.3.weight"] == 0.2
    assert abs(s.layer_sparsity("features.7.weight") - implied["features.7.weight"]) < 1e-3
    c.undo_button.click()
    assert app.wait_idle(30)
    assert c.scope.value == "global" and s.plan.scope == "global"
    assert c.layer_sliders["features.3.weight"].value == round(100 * implied["features.3.weight"], 6)
    assert s.generation == g0 + 3


def test_evaluation_error_is_shown_and_the_next_move_works(make_explorer):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    torch.manual_seed(0)
    app = make_explorer(Flaky().eval(), (x, y))
    assert app.wait_idle(30)
    try:
        Flaky.fail = True
        move(app, 0.5)
        assert "boom: the accelerator caught fire" in app.errors.text
        assert "Traceback" not in app.errors.value
        assert app.errors.layout.display is None
        assert app.accuracy.text == "evaluation failed"
        assert "pv-idle" in app.status._dom_classes
    finally:
        Flaky.fail = False
    move(app, 0.6)
    assert app.errors.text == "" and app.errors.layout.display == "none"
    assert app.accuracy.text.startswith("accuracy ")
    assert app.live.latest_final.generation == app.session.generation


def test_callback_errors_are_shown_and_the_control_reverts(make_explorer, tiny_cnn, cnn_batches):
    x = torch.cat([b[0] for b in cnn_batches])
    y = torch.cat([b[1] for b in cnn_batches])
    app = make_explorer(tiny_cnn, (x, y))  # no calib_data: gradient criteria cannot run
    assert app.wait_idle(30)
    labels = dict((v, k) for k, v in app.controls.criterion.options)
    assert "needs calib_data" in labels["saliency"]
    app.controls.criterion.value = "saliency"
    assert "calib_data" in app.errors.text
    assert app.controls.criterion.value == "magnitude" and app.session.plan.criterion == "magnitude"
    move(app, 0.3)
    assert app.errors.text == ""
    # an exception inside a view is caught too, and the others still render
    app.histogram.on_session = lambda event: 1 / 0
    move(app, 0.4)
    assert "ZeroDivisionError" in app.errors.text
    assert "40 % of weights removed" in app.headline.text


def test_export(demo, tmp_path):
    app = demo
    c = app.controls
    move(app, 0.5)
    c.export_path.value = str(tmp_path / "out")
    c.save_recipe_button.click()
    c.save_model_button.click()
    assert (tmp_path / "out" / "recipe.json").is_file()
    assert (tmp_path / "out" / "pruned_model.pt").is_file()
    assert str(tmp_path / "out" / "pruned_model.pt") in c.export_result.value
    c.export_path.value = str(tmp_path / "model.pth")
    c.export_form.value = "permanent"
    c.save_model_button.click()
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    assert int((state["features.3.weight"] == 0).sum()) == app.session.zeros("features.3.weight")
    # an unusable path: the message is shown, nothing raises
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c.export_path.value = str(blocker / "sub")
    c.save_recipe_button.click()
    assert "Could not save the recipe" in app.errors.text
    assert "Not saved" in c.export_result.value
    text = app.errors.text  # plain words: the path typed, the reason, the way out; no exception class name
    assert str(blocker / "sub") in text and "Not a directory" in text and "Choose a folder" in text, text
    assert "Error:" not in text and blocker.read_text() == "x"
    c.export_path.value = str(tmp_path / "again")
    c.save_recipe_button.click()  # a good path afterwards: saved, and the message goes away
    assert (tmp_path / "again" / "recipe.json").is_file() and app.errors.text == ""


def test_widget_count_stays_flat(make_explorer, tiny_cnn, cnn_batches):
    x = torch.cat([b[0] for b in cnn_batches])
    y = torch.cat([b[1] for b in cnn_batches])
    app = make_explorer(tiny_cnn, (x, y), first_chunk=48)
    assert app.wait_idle(30)
    slider = app.controls.global_slider
    values = [float(i % 97) for i in range(1, 1001)]  # percent
    for v in values[:10]:
        slider.value = v
    assert app.wait_idle(30)
    after_10 = live_widget_count()
    for v in values[10:]:
        slider.value = v
    assert app.wait_idle(30)
    assert live_widget_count() == after_10
    assert app.session.generation >= 990


def test_bytes_per_update_stay_small(demo):
    app = demo
    move(app, 0.2)
    for value in (0.5, 0.9):
        with record_traffic(keep=True) as traffic:
            move(app, value)
        assert 0 < traffic.bytes <= 50_000, traffic.by_widget()
        # no figure update leaves a property "undefined" for some trace (plotly 7's front-end model
        # mishandles those before a view exists), and no raw weights or int64 lists travel
        assert not any("_undefined_" in t for t in traffic.texts)
        assert max(n for _, n in traffic.messages) < 20_000


def test_a_failed_build_leaves_nothing_running(tiny_cnn, cnn_batches, monkeypatch):
    import pytest

    import pruneviz as pv
    import pruneviz.widgets.explorer as explorer
    from pruneviz.core import PrunevizError

    x = torch.cat([b[0] for b in cnn_batches])
    before = live_widget_count()
    with pytest.raises(PrunevizError, match="labels range"):
        pv.explore(tiny_cnn, (x, torch.full((len(x),), 12)))  # labels the 10-class model cannot have
    assert live_widget_count() == before

    def broken(*args, **kwargs):
        raise RuntimeError("view failed")

    monkeypatch.setattr(explorer, "FilterImportance", broken)
    threads = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="view failed"):
        pv.explore(tiny_cnn, (x, torch.cat([b[1] for b in cnn_batches])))
    assert live_widget_count() == before
    assert not [t for t in set(threading.enumerate()) - threads if t.is_alive()]
