"""Lesson 1 — what pruning is: one layer's weights, a slider that zeroes the smallest ones, the hole it leaves.

>>> from pruneviz.lessons import what_is_pruning as lesson
>>> app = lesson.show()          # heatmap + histogram of the MLP's fc2, a sparsity slider
>>> lesson.finding()             # Han et al. 2015 next to the same measurement on the digits MLP
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruneviz.core import PruningSession

from . import common as C

LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")
DEFAULT_LAYER = "fc2.weight"
BINS = 80


# ------------------------------------------------------------------------------------------------ compute
@dataclass(frozen=True)
class LayerPicture:
    """What the lesson draws for one layer at one sparsity."""

    name: str
    weights: np.ndarray  # (out, in) original weights, float32
    mask: np.ndarray  # bool, True = kept
    threshold: float | None  # largest |w| that was pruned (None: nothing pruned)
    edges: np.ndarray  # histogram bin edges (fixed per layer)
    kept_counts: np.ndarray  # float32 per bin: kept weights (their values)
    pruned_counts: np.ndarray  # float32 per bin: pruned weights (their original values)

    @property
    def sparsity(self) -> float:
        return 1.0 - float(self.mask.mean())

    @property
    def n_pruned(self) -> int:
        return int((~self.mask).sum())


def histogram_edges(weights: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Symmetric bin edges around 0 covering all of ``weights`` (fixed for a layer: bars do not jump)."""
    lim = float(np.abs(weights).max()) or 1.0
    return np.linspace(-lim, lim, bins + 1, dtype=np.float64)


def layer_picture(session: PruningSession, name: str, edges: np.ndarray | None = None) -> LayerPicture:
    """The original weights of ``name``, its current mask and the histograms of kept and pruned weights."""
    w = session.original(name).detach().float().reshape(session.original(name).shape[0], -1).numpy()
    mask = session.mask(name).reshape(w.shape).numpy()
    edges = histogram_edges(w) if edges is None else edges
    kept, _ = np.histogram(w[mask], bins=edges)
    pruned, _ = np.histogram(w[~mask], bins=edges)
    return LayerPicture(
        name, w.astype(np.float32), mask, session.pruned_magnitude_threshold(name), edges,
        kept.astype(np.float32), pruned.astype(np.float32),
    )


@C.single_threaded
def finding() -> C.Finding:
    """Han et al. 2015 (LeNet-300-100, 12x, no loss after retraining) next to our MLP without retraining."""
    model = C.demo_model("mlp")
    ev = C.evaluator(model)
    base = C.accuracy(ev, model)
    levels = C.sparsity_levels()
    s = PruningSession(model, criterion="magnitude", scope="layer")
    whole = C.accuracy_sweep(s, ev, levels)
    fc2 = []
    for v in levels:  # fc2 alone, the other layers dense
        s.set_sparsity("fc2.weight", float(v))
        fc2.append(C.accuracy(ev, model))
    s.reset()
    fc2 = np.asarray(fc2)
    s_whole = C.last_within(levels, whole, base)
    s_fc2 = C.last_within(levels, fc2, base)
    twelve = 1 - 1 / 12  # 12x fewer weights = 91.7 % sparsity
    s.set_global_sparsity(twelve)
    acc12 = C.accuracy(ev, model)
    s.reset()
    i90 = int(np.argmin(np.abs(levels - 0.9)))
    numbers = {
        "baseline": base, "whole_within_1pt": s_whole, "fc2_within_1pt": s_fc2,
        "acc_at_12x": acc12, "fc2_acc_at_90": float(fc2[i90]),
    }
    ours = (
        f"Digits MLP 64-300-100-10, unpruned test accuracy {C.pct(base)}; magnitude pruning of every layer, "
        f"<b>no retraining</b>:<br>• within 1 point up to <b>{C.pct(s_whole, 0)}</b> sparsity "
        f"({C.compression(s_whole):.1f}x fewer weights)<br>• at 12x (91.7 % sparsity): <b>{C.pct(acc12)}</b>"
        f"<br>• fc2 alone (300 → 100, the shape of LeNet-300-100's fc2): within 1 point up to "
        f"{C.pct(s_fc2, 0)}; {C.pct(float(fc2[i90]))} at 90 %"
    )
    reached = s_whole >= twelve - 1e-9
    if reached:
        verdict = (f"Even without retraining the digits MLP reaches 12x within 1 point ({C.pct(acc12)} at 12x): "
                   "a small MLP on an easy task is very redundant.")
    else:
        verdict = (f"Pruning alone removes {C.pct(s_whole, 0)} of the MLP's weights at no cost (and "
                   f"{C.pct(s_fc2, 0)} of fc2 alone), but at Han et al.'s 12x accuracy falls to {C.pct(acc12)}: "
                   "the last stretch needs the retraining step Han et al. use. Lesson 6 does that retraining.")
    return C.Finding(
        title="most weights of a trained network can be removed",
        source="Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural Networks, "
        "NeurIPS 2015",
        paper="LeNet-300-100 and LeNet-5 on MNIST: all weights below a threshold removed, then the network "
        "retrained; <b>12x fewer weights with no loss of accuracy</b> (VGG-16 on ImageNet: 13x).",
        ours=ours,
        verdict=verdict,
        numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class WhatIsPruning(W.VBox):
    """Heatmap + histogram of one MLP layer, a sparsity slider, the accuracy it costs.

    The figure is one ``FigureWidget`` (heatmap over histogram), created once and updated in place.
    """

    def __init__(self, layer: str = DEFAULT_LAYER, sparsity: float = 0.0) -> None:
        self.model = C.demo_model("mlp")
        self.session = PruningSession(self.model, criterion="magnitude", scope="layer")
        self.ev = C.evaluator(self.model)
        self.baseline = C.accuracy(self.ev, self.model)
        self._edges = {n: histogram_edges(self.session.original(n).numpy()) for n in LAYERS}
        self._grid: tuple[int, ...] | None = None

        self.error = C.error_area()
        self.layer = W.Dropdown(
            options=[(f"{n.split('.')[0]}  ({'x'.join(map(str, self.session.target(n).shape))} weights)", n)
                     for n in LAYERS],
            value=layer, description="Layer:", layout=W.Layout(width="300px"),
        )
        self.slider = W.FloatSlider(
            value=sparsity, min=0.0, max=0.99, step=0.01, description="Sparsity:", readout_format=".0%",
            continuous_update=False, layout=W.Layout(width="520px"), style={"description_width": "initial"},
        )
        self.slider.add_class("pv-lesson-slider")
        self.view = W.ToggleButtons(options=[("weights", "weights"), ("mask", "mask")], value="weights",
                                    description="Heatmap shows:", style={"description_width": "initial"})
        self.stats = W.HTML()

        fig = make_subplots(
            rows=2, cols=1, row_heights=[0.55, 0.45], vertical_spacing=0.2,
            subplot_titles=("Weights (grey = pruned)", "Distribution of the weights"),
        )
        # 1-D x/y/z heatmaps: plotly sends 1-D numeric arrays as binary buffers (2-D ones as JSON lists).
        # The pruned cells are an overlay (0 = transparent, 1 = grey), so no NaN is ever sent.
        fig.add_trace(go.Heatmap(name="weights", colorscale=C.WEIGHT_SCALE, showscale=True,
                                 colorbar={"title": "w", "len": 0.5, "y": 0.8},
                                 hovertemplate="out %{y}, in %{x}<br>w = %{z:.4f}<extra></extra>"), 1, 1)
        fig.add_trace(go.Heatmap(name="pruned", colorscale=[[0, "rgba(0,0,0,0)"], [1, C.PRUNED]], showscale=False,
                                 zmin=0, zmax=1, hoverinfo="skip"), 1, 1)
        fig.add_trace(go.Bar(name="kept weights", marker_color=C.KEPT, marker_line_width=0), 2, 1)
        fig.add_trace(go.Bar(name="pruned weights (their values before pruning)", marker_color=C.PRUNED,
                             marker_line_width=0), 2, 1)
        fig.update_layout(**C.figure_layout(height=620, barmode="stack", bargap=0.0,
                                            legend={"orientation": "h", "y": -0.12, "x": 0}))
        fig.update_xaxes(title_text="input unit", row=1, col=1)
        fig.update_yaxes(title_text="output unit", autorange="reversed", row=1, col=1)
        fig.update_xaxes(title_text="weight value w", row=2, col=1)
        fig.update_yaxes(title_text="number of weights", row=2, col=1)
        self.fig = go.FigureWidget(fig)
        self.fig._config = {"displaylogo": False}

        controls = W.HBox([self.layer, self.slider])
        super().__init__([controls, self.view, self.stats, self.error, self.fig])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-1")
        self.layer.observe(self._on_layer, names="value")
        self.slider.observe(self._on_slider, names="value")
        self.view.observe(self._on_view, names="value")
        self._on_slider(None)

    # callbacks ----------------------------------------------------------------------------------------
    @C.guarded()
    def _on_layer(self, change) -> None:
        self.session.reset()
        self.update()

    @C.guarded()
    def _on_slider(self, change) -> None:
        self.update()

    @C.guarded()
    def _on_view(self, change) -> None:
        self.update()

    def finding(self) -> C.Finding:
        """Han et al. 2015 next to the same measurement on the digits MLP (computed on its own copy)."""
        return finding()

    def set(self, sparsity: float | None = None, layer: str | None = None) -> None:
        """Move the controls from code (as a click would)."""
        if layer is not None:
            self.layer.value = layer
        if sparsity is not None:
            self.slider.value = sparsity

    def update(self) -> None:
        name, v = self.layer.value, float(self.slider.value)
        self.session.set_sparsity(name, v)
        pic = layer_picture(self.session, name, self._edges[name])
        acc = C.accuracy(self.ev, self.model)
        w = pic.weights
        n_out, n_in = w.shape
        xs = np.tile(np.arange(n_in, dtype=np.int16), n_out)
        ys = np.repeat(np.arange(n_out, dtype=np.int16), n_in)
        weights_view = self.view.value == "weights"
        base_z = w.ravel().astype(np.float32) if weights_view else np.ones(w.size, np.float32)
        lim = float(np.abs(w).max()) or 1.0
        pruned_z = (~pic.mask).ravel().astype(np.uint8)
        centres = ((pic.edges[:-1] + pic.edges[1:]) / 2).astype(np.float32)
        width = float(pic.edges[1] - pic.edges[0])
        thr = pic.threshold
        with C.updating(self.fig):
            hk, hp, bk, bp = self.fig.data
            if self._grid != w.shape:  # the coordinates only change with the layer
                hk.x, hk.y, hp.x, hp.y = xs, ys, xs, ys
                self._grid = w.shape
            hk.z = base_z
            if weights_view:
                hk.colorscale, hk.zmin, hk.zmax, hk.showscale = C.WEIGHT_SCALE, -lim, lim, True
                hk.hovertemplate = "out %{y}, in %{x}<br>w = %{z:.4f}<extra></extra>"
            else:
                hk.colorscale, hk.zmin, hk.zmax, hk.showscale = [[0, C.KEPT], [1, C.KEPT]], 0, 1, False
                hk.hovertemplate = "out %{y}, in %{x}<extra></extra>"
            hp.z = pruned_z
            bk.x, bk.y, bk.width = centres, pic.kept_counts, width
            bp.x, bp.y, bp.width = centres, pic.pruned_counts, width
            shapes = []
            if thr is not None:
                for x in (-thr, thr):
                    shapes.append({"type": "line", "xref": "x2", "yref": "y2 domain", "x0": x, "x1": x,
                                   "y0": 0, "y1": 1, "line": {"color": C.DANGER, "dash": "dash", "width": 2}})
            self.fig.layout.shapes = shapes
            self.fig.layout.annotations[0].text = (
                f"{name.split('.')[0]} weights ({'grey = pruned' if pic.n_pruned else 'nothing pruned yet'})"
            )
            self.fig.layout.annotations[1].text = (
                f"Distribution of the weights: the pruned ones leave a hole of width {2 * thr:.3f} around 0"
                if thr is not None else "Distribution of the weights"
            )
        t = self.session.target(name)
        drop = acc - self.baseline
        self.stats.value = C.stats_html([
            ("Sparsity of " + name.split(".")[0],
             f"<b>{C.pct(pic.sparsity)}</b> — {pic.n_pruned:,} of {t.numel:,} weights set to 0"),
            ("Rule", "prune every weight with |w| ≤ " + (f"{thr:.4f}" if thr is not None else "– (none pruned)")),
            ("Test accuracy", f"<b>{C.pct(acc)}</b> (unpruned {C.pct(self.baseline)}, "
             f"<span style='color:{C.DANGER if drop < -C.ONE_POINT else '#555'}'>{C.points(drop)}</span>)"),
            ("Other layers", "untouched (only this layer is pruned)"),
        ])


def widget(layer: str = DEFAULT_LAYER, sparsity: float = 0.0) -> WhatIsPruning:
    return WhatIsPruning(layer=layer, sparsity=sparsity)


def show(layer: str = DEFAULT_LAYER, sparsity: float = 0.0) -> WhatIsPruning:
    """Build and display the lesson's widget; returns it (``app.set(sparsity=0.6)`` moves the slider)."""
    return C.display_app(widget(layer, sparsity))


__all__ = ["LAYERS", "LayerPicture", "WhatIsPruning", "finding", "layer_picture", "show", "widget"]
