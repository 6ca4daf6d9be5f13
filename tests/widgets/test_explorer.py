"""pv.explore() on the demo CNN, the demo MLP, a torchvision ResNet-18 and a model without data."""

from __future__ import annotations

import subprocess
import sys

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from widget_helpers import Flaky, move

from pruneviz.core.evaluate import EvalResult
from pruneviz.widgets.accuracy import result_text
from pruneviz.widgets.figures import MainTraces

CSS_HOOKS = ("pv-global-slider", "pv-layer-slider", "pv-accuracy", "pv-headline", "pv-criterion", "pv-scope",
             "pv-undo", "pv-redo", "pv-reset", "pv-hist", "pv-filters", "pv-status", "pv-error")


def walk(w: widgets.Widget):
    yield w
    for child in getattr(w, "children", ()):
        yield from walk(child)


def test_import_pruneviz_does_not_import_widgets():
    code = "import sys, pruneviz; print('ipywidgets' in sys.modules, 'plotly' in sys.modules, callable(pruneviz.explore))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_demo_cnn_builds_with_every_part(demo):
    app = demo
    parts = list(walk(app))
    figs = [w for w in parts if isinstance(w, go.FigureWidget)]
    assert len(figs) == 2, "at most two FigureWidgets (each ships ~5 MB of plotly.js)"
    for fig in figs:
        assert fig.layout.width and fig.layout.height, "explicit sizes (they may sit in hidden containers)"
    classes = {c for w in parts for c in getattr(w, "_dom_classes", ())}
    assert set(CSS_HOOKS) <= classes
    sliders = [w for w in parts if isinstance(w, widgets.FloatSlider)]
    assert len(sliders) == 1 + len(app.session.targets)
    assert all(not s.continuous_update for s in sliders)
    assert app.controls.global_slider.max == 99  # percent: typing "40" in the readout means 40 %
    # the live evaluator is running and its first answer (the unpruned model) is shown
    assert app.live is not None and app.live.latest_final is not None
    assert app.accuracy.text == result_text(app.live.latest_final)
    assert app.accuracy.text.startswith("accuracy ")
    assert "(360/360 samples)" in app.accuracy.text
    assert app.headline.text.startswith("Accuracy ")
    assert "0 % of weights removed" in app.headline.text
    assert "pv-idle" in app.status._dom_classes and "pv-busy" not in app.status._dom_classes
    assert app.errors.layout.display == "none" and app.errors.text == ""
    assert app.session.plan.scope == "global"


def test_demo_moves_update_every_view(demo):
    app = demo
    move(app, 0.6)
    s = app.session
    assert abs(s.summary().sparsity - 0.6) < 0.01
    assert "60 % of weights removed" in app.headline.text
    assert "model 2." in app.headline.text and "FLOPs" in app.headline.text
    assert app.accuracy.text == result_text(app.live.latest_final)
    assert app.accuracy.progress.value == app.accuracy.progress.max == 360
    trail = app.accuracy.trail[("magnitude", "global")]
    assert set(trail) == {0.0, round(100 * s.summary().sparsity, 3)}
    trace = app.main_figure.data[MainTraces.TRAIL0]
    assert trace.visible is True and len(trace.x) == 2
    assert np.allclose(app.main_figure.data[MainTraces.CLASS_NOW].y, 100 * app.live.latest_final.per_class,
                       equal_nan=True)


def test_demo_mlp(make_explorer):
    app = make_explorer("mlp")
    assert app.wait_idle(30)
    assert app.filters.layer.value == "fc1.weight"  # no convolution: the first layer
    move(app, 0.9)
    assert app.filters.pruned_channels is not None
    heat = app.filter_figure.data[2]
    assert np.asarray(heat.z).shape == (32, 48)  # 300 x 64 downsampled to at most 32 x 48 blocks
    assert app.changes.images  # 1x8x8 inputs are shown as images
    app.controls.criterion.value = "bn_scale"  # the MLP has no BatchNorm: a plain-words error
    assert "BatchNorm" in app.errors.text
    assert app.controls.criterion.value == "magnitude"
    move(app, 0.5)
    assert app.errors.text == ""


def test_resnet18(make_explorer, resnet18):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    app = make_explorer(resnet18, (x, y))
    assert app.wait_idle(60)
    assert app.filters.layer.value == "conv1.weight"
    move(app, 0.5)
    h = app.histogram
    assert int(h.kept_counts.sum() + h.pruned_counts.sum()) == 64 * 3 * 7 * 7
    assert int(h.pruned_counts.sum()) == app.session.zeros("conv1.weight")
    # 64 kernels of 3x7x7: one dimming cell per kernel (8 x 8), not per weight
    assert np.asarray(app.filter_figure.data[3].z).shape == (8, 8)
    app.controls.scope.value = "structured"
    assert app.wait_idle(60)
    assert "channels removed" in app.headline.text
    f = app.summary.flops_now()
    assert f.structured is not None and f.structured < f.dense
    assert app.errors.text == ""


def test_model_without_data(make_explorer, tiny_cnn):
    app = make_explorer(tiny_cnn, example_input=torch.randn(1, 1, 8, 8))
    assert app.live is None
    assert "No evaluation data" in app.accuracy.label.value
    move(app, 0.5)
    assert "50 % of weights removed" in app.headline.text
    assert "Accuracy" not in app.headline.text
    assert app.summary.flops_now() is not None


def test_recurrent_model_on_token_data(make_explorer, tiny_rnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 20, (48, 6), generator=g), torch.randint(0, 3, (48,), generator=g)
    app = make_explorer(tiny_rnn, (x, y))
    assert app.wait_idle(30)
    assert not app.changes.images and not app.changes.slots  # not images: no gallery
    app.histogram.layer.value = "lstm.weight_hh_l0"
    app.filters.layer.value = "gru.weight_ih_l0_reverse"
    move(app, 0.7)
    h = app.histogram
    assert int(h.pruned_counts.sum()) == app.session.zeros("lstm.weight_hh_l0")
    assert app.errors.text == ""
    assert "70 % of weights removed" in app.headline.text


def test_dataset_and_ready_session(make_explorer, cnn_batches):
    from torch.utils.data import TensorDataset

    from pruneviz.core import PruningSession

    x = torch.cat([b[0] for b in cnn_batches])
    y = torch.cat([b[1] for b in cnn_batches])
    ds = TensorDataset(x, y)
    ds.classes = [f"k{i}" for i in range(10)]  # like torchvision datasets
    torch.manual_seed(0)
    s = PruningSession(Flaky().eval(), criterion="l1_filter", scope="structured", calib_data=cnn_batches)
    s.set_global_sparsity(0.25)
    app = make_explorer(s, ds)
    assert app.wait_idle(30)
    assert app.session is s and app.controls.scope.value == "structured"
    assert app.controls.criterion.value == "l1_filter" and app.controls.global_slider.value == 25
    assert app.changes.class_names[0] == "k0"
    assert "channels removed" in app.headline.text
    labels = dict((v, k) for k, v in app.controls.criterion.options)
    assert "needs calib_data" not in labels["saliency"]
    app.controls.criterion.value = "saliency"
    assert app.wait_idle(30) and app.errors.text == ""


def test_result_text_formats():
    r = EvalResult(n=128, total=360, accuracy=0.972, accuracy_ci=(0.961, 0.983), loss=0.0941)
    assert result_text(r) == "accuracy 97.2 % ± 1.1 (128/360 samples) · loss 0.094"
    assert result_text(EvalResult(n=5, total=5, loss=1.5)) == "(5/5 samples) · loss 1.500"


def test_the_trail_starts_at_the_unpruned_model_before_any_move(make_explorer):
    app = make_explorer("mlp")
    trail = app.accuracy.trail[("magnitude", "global")]
    assert list(trail) == [0.0] and abs(trail[0.0] - 100 * app.live.baseline.accuracy) < 1e-6
    trace = app.main_figure.data[MainTraces.TRAIL0]
    assert trace.visible is True and list(trace.x) == [0.0]
    assert app.filters.scores is not None and len(app.filters.scores) == 300  # fc1's outputs, drawn as bars
