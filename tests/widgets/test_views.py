"""What each view draws matches the session: histogram, per-layer bars, filters, summary, gallery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from widget_helpers import move

import pruneviz as pv
from pruneviz.widgets.figures import FilterTraces, MainTraces


@pytest.mark.parametrize("scope", ["global", "layer", "structured"])
def test_histogram_counts_match_the_session(demo, scope):
    app = demo
    app.controls.scope.value = scope
    for i, value in enumerate((0.3, 0.75)):
        move(app, value, via_state=bool(i % 2))
        for t in app.session.targets:
            app.histogram.layer.value = t.name
            h = app.histogram
            kept, pruned = h.kept_counts, h.pruned_counts
            assert kept.dtype == np.int32 and pruned.dtype == np.int32
            assert int(kept.sum() + pruned.sum()) == t.numel
            assert int(pruned.sum()) == app.session.zeros(t.name)
            # what the figure holds is what was computed (sent as int32, never int64)
            fig = app.main_figure
            assert np.array_equal(fig.data[MainTraces.HIST_KEPT].y, kept)
            assert np.array_equal(fig.data[MainTraces.HIST_PRUNED].y, pruned)
            assert fig.data[MainTraces.HIST_KEPT].y.dtype == np.int32


def test_magnitude_threshold_lines_and_log_scale(demo):
    app = demo
    move(app, 0.5)
    name = app.histogram.layer.value
    thr = app.session.pruned_magnitude_threshold(name)
    assert thr is not None and app.histogram.threshold == thr
    xs = sorted(s.x0 for s in app.main_figure.layout.shapes if s.xref == "x" and s.visible)
    assert xs == pytest.approx([-thr, thr])
    app.controls.criterion.value = "random"
    assert app.wait_idle(30)
    assert app.histogram.threshold is None
    assert not [s for s in app.main_figure.layout.shapes if s.xref == "x" and s.visible]
    app.histogram.scale.value = "log"
    assert app.main_figure.layout.yaxis.type == "log"


def test_allocation_bars_match_layer_sparsities(demo):
    app = demo
    for value in (0.4, 0.9):
        move(app, value)
        expected = app.session.layer_sparsities()
        drawn = app.allocation.values
        assert drawn.tolist() == [expected[n] for n in app.session.names]
        bars = np.asarray(app.main_figure.data[MainTraces.ALLOC].x)
        assert bars.dtype == np.float32
        assert np.allclose(bars / 100, [expected[n] for n in app.session.names], atol=1e-6)
    assert app.allocation.warning.layout.display == "none"
    move(app, 0.99)
    assert app.allocation.collapsed, "one global threshold empties some layer at 99 %"
    assert "Layer collapse" in app.allocation.warning.value
    assert app.allocation.warning.layout.display is None


def test_filter_bars_follow_criterion_and_scope(demo):
    app = demo
    f = app.filters
    name = f.layer.value
    assert name == "features.0.weight"
    before = f.scores.copy()
    assert np.allclose(before, app.session.scores(name, structured=True).numpy())
    app.controls.criterion.value = "l2_filter"  # (magnitude's filter score is the L1 norm)
    assert app.wait_idle(30)
    after = f.scores.copy()
    assert not np.allclose(before, after)
    assert np.allclose(after, app.session.scores(name, structured=True).numpy())
    # structured scope: whole filters go; the grey bars are exactly the pruned channels
    app.controls.scope.value = "structured"
    move(app, 0.5)
    keep = app.session.channel_mask(name)
    assert np.array_equal(f.pruned_channels, (~keep).numpy())
    grey = np.asarray(app.filter_figure.data[FilterTraces.IMP_PRUNED].y)
    blue = np.asarray(app.filter_figure.data[FilterTraces.IMP_KEPT].y)
    assert int(np.isfinite(grey).sum()) == int((~keep).sum()) == 8
    assert int(np.isfinite(blue).sum()) == 8
    # sorted, most important first
    ys = np.where(np.isfinite(blue), blue, grey)
    assert np.all(np.diff(ys) <= 0)
    # the first convolution shows its kernels, dimmed where pruned (per weight for this small grid)
    overlay = np.asarray(app.filter_figure.data[FilterTraces.OVERLAY].z)
    assert overlay.shape == (15, 15) and int((overlay == 4).sum()) == 8 * 9
    # another layer: a downsampled keep-mask
    f.layer.value = "classifier.0.weight"
    assert np.asarray(app.filter_figure.data[FilterTraces.HEAT].z).shape == (32, 48)


def test_a_patch_embedding_shows_its_keep_mask_not_768_kernels(make_explorer):
    # a ViT's 768 16x16 kernels would be a 226 k-cell heatmap (seconds of plotly validation): the mask instead
    from torch import nn

    from pruneviz.widgets import filters

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 768, 16, stride=16), nn.Flatten(), nn.Linear(768 * 4, 5)).eval()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    app = make_explorer(model, (x, y))
    assert filters._first_conv(app.session.targets) is None
    assert app.filters.layer.value == "0.weight"
    assert np.asarray(app.filter_figure.data[FilterTraces.HEAT].z).shape == (32, 48)
    assert app.filter_figure.data[FilterTraces.OVERLAY].visible is False
    small = nn.Sequential(nn.Conv2d(3, 64, 7, stride=4), nn.Flatten(), nn.Linear(64 * 49, 5))
    assert filters._first_conv(pv.PruningSession(small).targets) == "0.weight"  # ResNet's stem: kernels


def test_bn_scale_unsupported_layers_are_explained(demo):
    app = demo
    app.controls.criterion.value = "bn_scale"
    assert app.wait_idle(30)
    assert app.errors.text == ""
    app.filters.layer.value = "classifier.0.weight"
    assert "cannot score this layer" in app.filters.note.value
    assert app.controls.layer_sliders["classifier.0.weight"].disabled


def test_gallery_shows_flipped_samples(demo):
    app = demo
    move(app, 0.95)
    ch = app.changes
    final = app.live.latest_final
    assert len(final.changed) > 8
    assert len(ch.flipped) == 8 and set(ch.flipped) <= set(final.changed.tolist())
    for (img, label), box in zip(ch.slots, ch._boxes, strict=True):
        assert box.layout.display is None
        png = bytes(img.value)
        assert png.startswith(b"\x89PNG") and len(png) < 2000
        assert "→" in label.value and "true" in label.value
    assert f"{len(final.changed)} of 360" in ch.header.value
    move(app, 0.0)
    assert all(box.layout.display == "none" for box in ch._boxes)


def test_summary_numbers(demo):
    app = demo
    app.controls.scope.value = "structured"
    move(app, 0.5)
    s = app.session
    summ = s.summary()
    f = app.summary.flops_now()
    assert f.structured is not None and not f.pending
    assert f.dense > f.sparse > 0 and f.structured < f.dense
    text = app.summary.value
    assert "Channels removed" in text and "counting" not in text
    assert f"{100 * summ.sparsity:.0f} %" in text
    assert "channels removed)" in app.headline.text
    assert "pv-idle" in app.status._dom_classes


def test_figure_state_is_kept_for_late_front_ends(demo):
    """Voila asks for the full state after the notebook ran: it must hold the current data."""
    app = demo
    move(app, 0.5)
    data = app.main_figure._widget_data
    assert np.array_equal(data[MainTraces.HIST_PRUNED]["y"], app.histogram.pruned_counts)
    assert np.array_equal(np.asarray(data[MainTraces.ALLOC]["x"]), app.main_figure.data[MainTraces.ALLOC].x)
    assert app.filter_figure._widget_data[FilterTraces.IMP_KEPT]["y"] is not None


def test_images_only_for_image_data(make_explorer, tiny_cnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)
    app = make_explorer(tiny_cnn, (x, y), class_names=[f"c{i}" for i in range(10)])
    assert app.wait_idle(30)
    assert app.changes.images and app.changes.class_names[3] == "c3"
    assert list(app.main_figure.data[MainTraces.CLASS_NOW].x)[:2] == ["c0", "c1"]


def test_flops_count_failure_is_explained(demo, monkeypatch):
    import pruneviz.widgets.summary as summary

    def broken(*args, **kwargs):
        raise RuntimeError("torch-pruning cannot trace this model")

    monkeypatch.setattr(summary, "slim_copy", broken)
    app = demo
    app.controls.scope.value = "structured"
    move(app, 0.5)
    assert "not available: RuntimeError: torch-pruning cannot trace this model" in app.summary.value
    assert "FLOPs" in app.headline.text and "(channels removed)" not in app.headline.text
    assert app.errors.text == "" and "pv-idle" in app.status._dom_classes
