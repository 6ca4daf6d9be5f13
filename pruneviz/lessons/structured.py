"""Lesson 4 — structured pruning: whole filters removed, and why % zeros is not % FLOPs saved.

>>> from pruneviz.lessons import structured as lesson
>>> app = lesson.show()          # first-layer kernels (pruned ones dimmed), filter norms, zeros vs FLOPs
>>> lesson.finding()             # Li et al. 2017 (34 % fewer FLOPs) next to the digits CNN
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from pruneviz.core import PruningSession
from pruneviz.core.flops import FlopsCounter, slim_copy

from . import common as C

CRITERIA = ("l1_filter", "l2_filter", "random")
FIRST_CONV = "features.0.weight"
RATIOS = tuple(round(0.05 * i, 2) for i in range(19))  # 0 .. 0.9
#: Li et al. 2017's VGG-16 result: 34 % fewer FLOPs.
PAPER_FLOPS_CUT = 0.34
MOSAIC_COLS = 8


# ------------------------------------------------------------------------------------------------ compute
@dataclass(frozen=True)
class StructuredPoint:
    """Everything the lesson shows for one criterion at one ratio of filters removed per layer."""

    criterion: str
    ratio: float  # fraction of output filters / neurons removed in every layer but the output layer
    zeros: float  # fraction of prunable weights that are zero in the masked model
    params_dense: int
    params_slim: int  # parameters of the physically slimmed network (all parameters, BN included)
    flops_dense: int
    flops_sparse: int  # if every zero weight were skipped (the masked layers only)
    flops_slim: int  # after physically removing the filters (and the next layers' matching inputs)
    acc_dense: float
    acc_slim: float  # test accuracy of the slimmed network
    acc_masked: float  # test accuracy of the masked model (filters, biases and BatchNorm scale/shift zeroed)
    filters: dict[str, tuple[int, int]]  # layer -> (removed, total)

    @property
    def flops_cut(self) -> float:
        return 1 - self.flops_slim / self.flops_dense

    @property
    def params_cut(self) -> float:
        return 1 - self.params_slim / self.params_dense

    @property
    def sparse_flops_cut(self) -> float:
        return 1 - self.flops_sparse / self.flops_dense


class StructuredLab:
    """One CNN, one session per criterion, and a cache of measured points (ratios are discrete)."""

    def __init__(self, criteria: Sequence[str] = CRITERIA, seed: int = 0) -> None:
        self.criteria = tuple(criteria)
        self.example = C.digits().test[0][:1]
        self.models = {c: C.demo_model("cnn") for c in self.criteria}
        self.sessions = {c: PruningSession(self.models[c], criterion=c, scope="structured", seed=seed)
                         for c in self.criteria}
        self.evaluators = {c: C.evaluator(self.models[c]) for c in self.criteria}
        self.counters = {c: FlopsCounter(self.sessions[c], self.example) for c in self.criteria}
        self.acc_dense = C.accuracy(self.evaluators[self.criteria[0]], self.models[self.criteria[0]])
        self.params_dense = sum(p.numel() for p in self.models[self.criteria[0]].parameters())
        self._cache: dict[tuple[str, float], StructuredPoint] = {}

    def session(self, criterion: str, ratio: float) -> PruningSession:
        """The criterion's session, set to ``ratio`` (and left there)."""
        s = self.sessions[criterion]
        s.set_global_sparsity(float(ratio))
        return s

    @C.single_threaded
    def point(self, criterion: str, ratio: float) -> StructuredPoint:
        key = (criterion, round(float(ratio), 4))
        if key not in self._cache:
            s = self.session(criterion, ratio)
            rep = self.counters[criterion].report()
            ev = self.evaluators[criterion]
            slim, _coupled = slim_copy(s, self.example)
            filters = {}
            for t in s.targets:
                keep = s.channel_mask(t.name)
                removed = 0 if keep is None else int((~keep).sum())
                filters[t.name] = (removed, t.channels)
            self._cache[key] = StructuredPoint(
                criterion, float(ratio), s.summary().sparsity, self.params_dense,
                sum(p.numel() for p in slim.parameters()), rep.dense, rep.sparse, rep.structured,
                self.acc_dense, C.accuracy(ev, slim), C.accuracy(ev, s.model), filters,
            )
        return self._cache[key]


def filter_scores(session: PruningSession, name: str) -> np.ndarray:
    """Importance of each output filter of ``name`` under the session's criterion."""
    scores = session.scores(name, structured=True)
    if scores is None:
        return np.full(session.target(name).channels, np.nan)
    return scores.detach().float().numpy()


def kernel_mosaic(weight: torch.Tensor, keep: np.ndarray, cols: int = MOSAIC_COLS) -> tuple[np.ndarray, ...]:
    """First-layer kernels (out, 1, k, k) tiled into one image with 1-pixel gaps.

    Returns (weights, dim, index) of the same 2-D shape, as object arrays whose gaps are None (sent as
    JSON null: a transparent cell; NaN would not be valid JSON): every kernel's weights, 1 on the pixels of
    removed kernels (the grey veil that dims them), and each pixel's filter index.
    """
    w = weight.detach().float().numpy()
    n, k = w.shape[0], w.shape[-1]
    rows = -(-n // cols)
    shape = (rows * (k + 1) - 1, cols * (k + 1) - 1)
    weights, dim, index = (np.full(shape, None, dtype=object) for _ in range(3))
    for i in range(n):
        r, c = divmod(i, cols)
        sl = (slice(r * (k + 1), r * (k + 1) + k), slice(c * (k + 1), c * (k + 1) + k))
        weights[sl] = np.round(w[i].mean(axis=0), 4)  # 1 input channel: the kernel itself
        index[sl] = i
        if not keep[i]:
            dim[sl] = 1
    return weights, dim, index


@C.single_threaded
def finding(lab: StructuredLab | None = None) -> C.Finding:
    """Li et al. 2017 (VGG-16 on CIFAR-10: 34 % fewer FLOPs at no loss, after retraining) vs the digits CNN."""
    lab = lab or StructuredLab()
    crit = "l1_filter"
    ratio = next((r for r in RATIOS if lab.point(crit, r).flops_cut >= PAPER_FLOPS_CUT), RATIOS[-1])
    p = lab.point(crit, ratio)
    rnd = lab.point("random", ratio) if "random" in lab.criteria else None
    numbers = {
        "ratio": ratio, "zeros": p.zeros, "flops_cut": p.flops_cut, "params_cut": p.params_cut,
        "acc_dense": p.acc_dense, "acc_l1": p.acc_slim, "acc_l1_masked": p.acc_masked,
    }
    if rnd is not None:
        numbers["acc_random"] = rnd.acc_slim
    ours = (
        f"Digits CNN (unpruned {C.pct(p.acc_dense)}), the {C.pct(ratio, 0)} of filters with the smallest L1 norm "
        f"removed from every layer:<br>• weights zeroed: <b>{C.pct(p.zeros)}</b><br>• FLOPs removed: "
        f"<b>{C.pct(p.flops_cut)}</b>, parameters removed: {C.pct(p.params_cut)} (filters physically taken out)"
        f"<br>• test accuracy <b>without retraining</b>: <b>{C.pct(p.acc_slim)}</b>"
        + (f" (random filters: {C.pct(rnd.acc_slim)})" if rnd is not None else "")
    )
    lost = p.acc_dense - p.acc_slim
    verdict = (
        f"The arithmetic is reproduced: {C.pct(p.zeros, 0)} zeros buy {C.pct(p.flops_cut, 0)} fewer FLOPs, "
        "because a removed filter also removes the next layer's input channel. "
        + (f"The accuracy is not, yet: {C.points(-lost)} without retraining, where Li et al. lost nothing after "
           "retraining; lesson 6 adds the fine-tuning." if lost > C.ONE_POINT else
           "And even without retraining the accuracy holds within a point.")
        + (" L1 norm beats random filters at the same ratio." if rnd is not None and p.acc_slim > rnd.acc_slim
           else "")
    )
    return C.Finding(
        title="pruning whole filters cuts FLOPs, not just weights",
        source="Li, Kadav, Durdanovic, Samet & Graf, Pruning Filters for Efficient ConvNets, ICLR 2017",
        paper="VGG-16 on CIFAR-10: filters with the smallest L1 norm removed, then retrained: <b>34 % fewer "
        "FLOPs</b>, test error 6.75 % → 6.60 %. No sparse kernels needed: the pruned network is simply smaller.",
        ours=ours,
        verdict=verdict,
        numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class StructuredLesson(W.VBox):
    """Kernels of the first conv layer, filter importances, and what a structured "ratio" means."""

    BAR_LABELS = ("filters removed", "weights zeroed", "parameters removed", "FLOPs removed",
                  "FLOPs if zeros were skipped")

    def __init__(self, criterion: str = "l1_filter", ratio: float = 0.25, layer: str = FIRST_CONV) -> None:
        self.error = C.error_area()
        self.lab = StructuredLab()
        self.crit = W.ToggleButtons(options=[(C.CRITERION_LABELS[c], c) for c in CRITERIA], value=criterion,
                                    description="Rank filters by:",
                                    style={"description_width": "initial", "button_width": "170px"})
        self.slider = W.SelectionSlider(
            options=[(f"{round(100 * r)} %", r) for r in RATIOS], value=round(ratio, 2),
            description="Filters removed per layer:", continuous_update=False,
            layout=W.Layout(width="560px"), style={"description_width": "initial"},
        )
        self.slider.add_class("pv-lesson-slider")
        layers = [n for n in self.lab.sessions[criterion].names if n not in self.lab.sessions[criterion].output_layers]
        self.layer = W.Dropdown(options=[(n.rsplit(".", 1)[0], n) for n in layers], value=layer,
                                description="Importance of:", style={"description_width": "initial"})
        self.stats = W.HTML()
        fig = make_subplots(
            rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], row_heights=[0.4, 0.6],
            vertical_spacing=0.14, horizontal_spacing=0.12,
            subplot_titles=("First conv layer: its 16 kernels (3x3); dimmed = filter removed",
                            "Filter importance, most important first", "What the ratio means"),
        )
        fig.add_trace(go.Heatmap(name="kernels", colorscale=C.WEIGHT_SCALE, colorbar={"len": 0.35, "y": 0.82},
                                 hovertemplate="filter %{customdata}<br>w = %{z:.3f}<extra></extra>"), 1, 1)
        fig.add_trace(go.Heatmap(name="removed", colorscale=[[0, "rgba(215,215,215,0.85)"],
                                                             [1, "rgba(215,215,215,0.85)"]],
                                 zmin=0, zmax=1, showscale=False, hoverinfo="skip"), 1, 1)
        fig.add_trace(go.Bar(name="importance", marker_line_width=0,
                             hovertemplate="filter %{customdata}<br>score %{y:.3f}<extra></extra>"), 2, 1)
        fig.add_trace(go.Bar(name="ratio", marker_color=["#7f7f7f", "#7f7f7f", "#ff7f0e", "#ff7f0e", "#ffbb78"],
                             texttemplate="%{y:.0f} %", textposition="outside",
                             hovertemplate="%{x}: %{y:.1f} %<extra></extra>"), 2, 2)
        fig.update_layout(**C.figure_layout(height=700, showlegend=False))
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", row=1, col=1)
        fig.update_xaxes(title_text="filters, ranked", row=2, col=1)
        fig.update_yaxes(title_text="importance score", row=2, col=1)
        fig.update_yaxes(title_text="% of the dense network", range=[0, 110], row=2, col=2)
        fig.update_xaxes(tickangle=-25, row=2, col=2)
        self.fig = go.FigureWidget(fig)
        super().__init__([W.HBox([self.crit]), W.HBox([self.slider, self.layer]), self.stats, self.error, self.fig])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-4")
        for w in (self.crit, self.slider, self.layer):
            w.observe(self._on_change, names="value")
        self._on_change(None)

    @C.guarded()
    def _on_change(self, change) -> None:
        self.update()

    def set(self, ratio: float | None = None, criterion: str | None = None, layer: str | None = None) -> None:
        if criterion is not None:
            self.crit.value = criterion
        if layer is not None:
            self.layer.value = layer
        if ratio is not None:
            self.slider.value = round(ratio, 2)

    def update(self) -> None:
        crit, ratio, layer = self.crit.value, float(self.slider.value), self.layer.value
        p = self.lab.point(crit, ratio)
        s = self.lab.session(crit, ratio)
        keep0 = s.channel_mask(FIRST_CONV)
        keep0 = np.ones(s.target(FIRST_CONV).channels, bool) if keep0 is None else keep0.numpy()
        weights, dim, index = kernel_mosaic(s.original(FIRST_CONV), keep0)
        lim = float(np.nanmax(np.abs(s.original(FIRST_CONV).numpy())))
        scores = filter_scores(s, layer)
        keep = s.channel_mask(layer)
        keep = np.ones(len(scores), bool) if keep is None else keep.numpy()
        order = np.argsort(-scores, kind="stable")
        bars = [100 * ratio, 100 * p.zeros, 100 * p.params_cut, 100 * p.flops_cut, 100 * p.sparse_flops_cut]
        with C.updating(self.fig):
            hk, hp, imp, what = self.fig.data
            hk.z, hk.customdata, hk.zmin, hk.zmax = weights, index, -lim, lim
            hp.z = dim
            imp.x = np.arange(1, len(scores) + 1, dtype=np.int32)
            imp.y = scores[order].astype(np.float32)
            imp.customdata = order.astype(np.int32)
            imp.marker.color = [C.KEPT if keep[i] else C.PRUNED for i in order]
            what.x, what.y = list(self.BAR_LABELS), np.asarray(bars, np.float32)
            self.fig.layout.annotations[1].text = (
                f"Importance of {layer.rsplit('.', 1)[0]}'s {len(scores)} filters ({C.CRITERION_LABELS[crit]}); "
                "grey = removed")
        per_layer = ", ".join(f"{n.rsplit('.', 1)[0]} {r}/{t}" for n, (r, t) in p.filters.items() if t and r)
        drop = p.acc_slim - p.acc_dense
        self.stats.value = C.stats_html([
            ("Filters removed", per_layer or "none"),
            ("Weights zeroed", f"<b>{C.pct(p.zeros)}</b> of the prunable weights"),
            ("Parameters", f"{p.params_dense:,} → <b>{p.params_slim:,}</b> after physically removing the filters "
                           f"({C.pct(p.params_cut)} fewer)"),
            ("FLOPs per image", f"{p.flops_dense:,} → <b>{p.flops_slim:,}</b> ({C.pct(p.flops_cut)} fewer, "
                                f"{p.flops_dense / max(p.flops_slim, 1):.1f}x); a sparse kernel skipping the zeros "
                                f"would save only {C.pct(p.sparse_flops_cut)}"),
            ("Test accuracy", f"<b>{C.pct(p.acc_slim)}</b> (dense {C.pct(p.acc_dense)}, "
                              f"<span style='color:{C.DANGER if drop < -C.ONE_POINT else '#555'}'>{C.points(drop)}"
                              f"</span>) — the smaller network, no retraining"),
            ("", f"<span style='color:#777'>the masked model (filters zeroed in place, with their bias and "
                 f"BatchNorm scale and shift): {C.pct(p.acc_masked)}, the same network</span>"),
        ])

    def finding(self) -> C.Finding:
        return finding(self.lab)


def widget(criterion: str = "l1_filter", ratio: float = 0.25) -> StructuredLesson:
    return StructuredLesson(criterion, ratio)


def show(criterion: str = "l1_filter", ratio: float = 0.25) -> StructuredLesson:
    """Build and display the lesson; returns it (``app.set(ratio=0.5)`` moves the slider)."""
    return C.display_app(widget(criterion, ratio))
