"""Lesson 3 — global vs layer-wise: the same total sparsity allocated two ways, and a layer collapsing.

>>> from pruneviz.lessons import scope as lesson
>>> app = lesson.show()          # one slider for the total sparsity, per-layer bars, both accuracy curves
>>> lesson.finding()             # Tanaka et al. 2020 (layer collapse) next to the digits MLP and CNN
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruneviz.core import PruningSession

from . import common as C

MODES = ("layer", "global")
MODELS = ("mlp", "cnn")
#: A layer with at least this share of its weights pruned has (all but) collapsed.
COLLAPSE = 0.99


# ------------------------------------------------------------------------------------------------ compute
@dataclass
class ScopeCurves:
    """Accuracy of both allocations at each total sparsity, and the per-layer sparsity global implies."""

    model: str
    levels: np.ndarray
    baseline: float
    layers: list[str]
    sizes: list[int]
    acc: dict[str, np.ndarray] = field(default_factory=dict)
    implied: np.ndarray | None = None  # (levels, layers): per-layer sparsity under one global threshold

    def at(self, mode: str, sparsity: float) -> float:
        return float(np.interp(sparsity, self.levels, self.acc[mode]))

    def within(self, mode: str, drop: float = C.ONE_POINT) -> float:
        return C.last_within(self.levels, self.acc[mode], self.baseline, drop)

    def first_collapse(self, threshold: float = COLLAPSE) -> tuple[float, str] | None:
        """The lowest measured total sparsity at which a global threshold prunes a layer to >= ``threshold``."""
        assert self.implied is not None
        for i, v in enumerate(self.levels):
            j = int(np.argmax(self.implied[i]))
            if self.implied[i, j] >= threshold:
                return float(v), self.layers[j]
        return None


def scope_levels() -> np.ndarray:
    return C.sparsity_levels(stop=0.95, step=0.025, extra=(0.96, 0.97, 0.98, 0.985, 0.99, 0.995))


@C.single_threaded
def scope_curves(
    model_name: str, levels: Sequence[float] | None = None, progress: Callable[[], None] | None = None
) -> ScopeCurves:
    """Accuracy vs total sparsity with uniform per-layer sparsity and with one global magnitude threshold."""
    levels = np.asarray(scope_levels() if levels is None else levels, dtype=float)
    model = C.demo_model(model_name)
    ev = C.evaluator(model)
    session = PruningSession(model, criterion="magnitude", scope="layer")
    out = ScopeCurves(model_name, levels, C.accuracy(ev, model), session.names,
                      [t.numel for t in session.targets])
    for mode in MODES:
        session.set_scope(mode)
        implied, accs = [], []
        try:
            for v in levels:
                session.set_global_sparsity(float(v))
                accs.append(C.accuracy(ev, model))
                implied.append([session.layer_sparsity(n) for n in session.names])
                if progress is not None:
                    progress()
        finally:
            session.reset()
        out.acc[mode] = np.asarray(accs)
        if mode == "global":
            out.implied = np.asarray(implied)
    return out


@C.single_threaded
def finding(curves: dict[str, ScopeCurves] | None = None) -> C.Finding:
    """Tanaka et al. 2020: global masking beats layer-wise masking, but can collapse a layer."""
    if curves is None:
        curves = {m: scope_curves(m) for m in MODELS}
    numbers: dict[str, float] = {}
    parts, wins, collapses = [], [], []
    for m in MODELS:
        c = curves[m]
        i80 = int(np.argmin(np.abs(c.levels - 0.8)))
        u, g = float(c.acc["layer"][i80]), float(c.acc["global"][i80])
        col = c.first_collapse()
        numbers.update({f"{m}_uniform_acc_at_80": u, f"{m}_global_acc_at_80": g,
                        f"{m}_uniform_within_1pt": c.within("layer"), f"{m}_global_within_1pt": c.within("global")})
        wins.append(g > u)
        text = (f"<b>{C.MODEL_LABELS[m]}</b>: at 80 % total sparsity uniform <b>{C.pct(u)}</b>, global "
                f"<b>{C.pct(g)}</b>; within 1 point up to {C.pct(c.within('layer'), 1)} (uniform) vs "
                f"{C.pct(c.within('global'), 1)} (global).<br>")
        if col is not None:
            v, layer = col
            numbers[f"{m}_collapse_at"] = v
            collapses.append(True)
            text += (f"The global threshold prunes <code>{layer}</code> to ≥ {C.pct(COLLAPSE, 0)} at {C.pct(v, 1)} "
                     f"total sparsity; accuracy there: {C.pct(c.at('global', v))}.")
        else:
            collapses.append(False)
            text += f"No layer reached {C.pct(COLLAPSE, 0)} up to {C.pct(float(c.levels[-1]), 1)} total sparsity."
        parts.append(text)
    verdict = (
        "Reproduced: the global threshold keeps more accuracy than uniform sparsity at the same total on both "
        "models" if all(wins) else "Only partly reproduced: global did not beat uniform on every model"
    )
    hits = [(curves[m].first_collapse(), m) for m in MODELS if curves[m].first_collapse() is not None]
    if hits:
        (v, layer), m = min(hits, key=lambda h: h[0][0])
        acc = curves[m].at("global", v)
        verdict += (
            f"; pushed far enough, the single threshold empties one layer before the others (layer collapse: "
            f"{layer} on the {m.upper()} at {C.pct(v, 1)} total sparsity). "
            + ("Here that happens only after accuracy has already fallen (" + C.pct(acc) + "): on these small "
               "models collapse is the end point, not the first failure." if acc < curves[m].baseline - 0.2 else
               f"Accuracy there is still {C.pct(acc)}, so the collapse itself is what breaks the model.")
        )
    else:
        verdict += "; no layer collapsed in the measured range."
    return C.Finding(
        title="global thresholds win, until a layer collapses",
        source="Tanaka, Kunin, Yamins & Ganguli, Pruning neural networks without any data by iteratively "
        "conserving synaptic flow, NeurIPS 2020",
        paper="Global masking (one ranking over all layers) is reported to perform far better than layer-wise "
        "masking, but it risks <b>layer collapse</b>: <i>the premature pruning of an entire layer</i>, which "
        "cuts the network in two (their VGG and ResNet experiments on CIFAR and Tiny ImageNet).",
        ours="<br><br>".join(parts),
        verdict=verdict,
        numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class ScopeLesson(W.VBox):
    """One total-sparsity slider; per-layer bars for both allocations; accuracy curves of both."""

    def __init__(self, model: str = "mlp", sparsity: float = 0.8) -> None:
        self.error = C.error_area()
        self.progress = C.progress_bar("Curves")
        self.curves: dict[str, ScopeCurves] = {}
        self.sessions: dict[str, tuple[PruningSession, PruningSession, object, object]] = {}
        self.model_pick = W.ToggleButtons(options=[(C.MODEL_LABELS[m], m) for m in MODELS], value=model,
                                          description="Model:", style={"button_width": "240px"})
        self.slider = W.FloatSlider(
            value=sparsity, min=0.0, max=0.995, step=0.005, description="Total sparsity:", readout_format=".1%",
            continuous_update=False, layout=W.Layout(width="560px"), style={"description_width": "initial"},
        )
        self.slider.add_class("pv-lesson-slider")
        self.stats = W.HTML()
        fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                            subplot_titles=("Sparsity of each layer", "Test accuracy vs total sparsity"))
        for mode in MODES:
            fig.add_trace(go.Bar(name=C.SCOPE_LABELS[mode], marker_color=C.SCOPE_COLORS[mode], legendgroup=mode,
                                 texttemplate="%{y:.1f} %", textposition="outside",
                                 hovertemplate="%{x}<br>%{y:.2f} % pruned<extra>" + mode + "</extra>"), 1, 1)
        for mode in MODES:
            fig.add_trace(go.Scatter(name=C.SCOPE_LABELS[mode], mode="lines", legendgroup=mode, showlegend=False,
                                     line={"color": C.SCOPE_COLORS[mode], "width": 3}), 1, 2)
        for mode in MODES:
            fig.add_trace(go.Scatter(mode="markers", legendgroup=mode, showlegend=False, hoverinfo="skip",
                                     marker={"color": C.SCOPE_COLORS[mode], "size": 13,
                                             "line": {"color": "white", "width": 2}}), 1, 2)
        fig.update_layout(**C.figure_layout(height=520, barmode="group", bargap=0.25))
        fig.update_yaxes(title_text="layer sparsity (% of its weights pruned)", range=[0, 112], row=1, col=1)
        fig.update_xaxes(title_text="total sparsity (% of all weights pruned)", range=[0, 100], row=1, col=2)
        fig.update_yaxes(title_text="test accuracy (%)", range=[0, 102], row=1, col=2)
        self.fig = go.FigureWidget(fig)
        super().__init__([W.HBox([self.model_pick, self.progress]), self.slider, self.stats, self.error, self.fig])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-3")
        self.model_pick.observe(self._on_model, names="value")
        self.slider.observe(self._on_slider, names="value")
        self._on_model(None)

    # callbacks ----------------------------------------------------------------------------------------
    @C.guarded()
    def _on_model(self, change) -> None:
        self.switch(self.model_pick.value)

    @C.guarded()
    def _on_slider(self, change) -> None:
        self.update()

    def set(self, sparsity: float | None = None, model: str | None = None) -> None:
        if model is not None:
            self.model_pick.value = model
        if sparsity is not None:
            self.slider.value = sparsity

    def _sessions(self, m: str):
        if m not in self.sessions:
            mu, mg = C.demo_model(m), C.demo_model(m)
            su = PruningSession(mu, criterion="magnitude", scope="layer")
            sg = PruningSession(mg, criterion="magnitude", scope="global")
            self.sessions[m] = (su, sg, C.evaluator(mu), C.evaluator(mg))
        return self.sessions[m]

    def switch(self, m: str) -> None:
        """Show model ``m``: measure its curves once (progress bar), then draw."""
        if m not in self.curves:
            levels = scope_levels()
            tick = C.Ticker(self.progress, len(MODES) * len(levels), "Curves")
            self.curves[m] = scope_curves(m, levels, progress=tick.tick)
            tick.finish("Curves ready")
        c = self.curves[m]
        names = [f"{n.rsplit('.', 1)[0]}<br>{size:,} w" for n, size in zip(c.layers, c.sizes, strict=True)]
        x = (100 * c.levels).astype(np.float32)
        with C.updating(self.fig):
            for k, mode in enumerate(MODES):
                self.fig.data[k].x = names
                self.fig.data[2 + k].x, self.fig.data[2 + k].y = x, (100 * c.acc[mode]).astype(np.float32)
        self.update()

    def update(self) -> None:
        m, v = self.model_pick.value, float(self.slider.value)
        su, sg, eu, eg = self._sessions(m)
        su.set_global_sparsity(v)
        sg.set_global_sparsity(v)
        uni = np.array([su.layer_sparsity(n) for n in su.names])
        glo = np.array([sg.layer_sparsity(n) for n in sg.names])
        au, ag = C.accuracy(eu, su.model), C.accuracy(eg, sg.model)
        collapsed = [n for n, s in zip(sg.names, glo, strict=True) if s >= COLLAPSE]
        colors = [C.DANGER if s >= COLLAPSE else C.SCOPE_COLORS["global"] for s in glo]
        with C.updating(self.fig):
            self.fig.data[0].y = (100 * uni).astype(np.float32)
            self.fig.data[1].y = (100 * glo).astype(np.float32)
            self.fig.data[1].marker.color = colors
            self.fig.data[4].x, self.fig.data[4].y = [100 * v], [100 * au]
            self.fig.data[5].x, self.fig.data[5].y = [100 * v], [100 * ag]
            self.fig.layout.shapes = [{
                "type": "line", "xref": "x2", "yref": "y2 domain", "x0": 100 * v, "x1": 100 * v, "y0": 0, "y1": 1,
                "line": {"color": C.INK, "width": 1.5, "dash": "dot"}}]
        rows = [
            ("Total sparsity", f"<b>{C.pct(v)}</b> of {sum(t.numel for t in sg.targets):,} weights, in both cases"),
            ("Uniform", f"every layer {C.pct(v)}: test accuracy <b>{C.pct(au)}</b>"),
            ("Global", "one threshold |w| ≤ " + self._threshold(sg) + f": test accuracy <b>{C.pct(ag)}</b>; "
             + ", ".join(f"{n.rsplit('.', 1)[0]} {C.pct(s)}" for n, s in zip(sg.names, glo, strict=True))),
        ]
        if collapsed:
            left = ", ".join(f"{n.rsplit('.', 1)[0]} keeps {sg.target(n).numel - sg.zeros(n):,} of "
                             f"{sg.target(n).numel:,} weights" for n in collapsed)
            rows.append(("⚠ Layer collapse", f"<span style='color:{C.DANGER}'><b>{left}</b>: almost nothing flows "
                                              "through it any more.</span>"))
        self.stats.value = C.stats_html(rows)

    @staticmethod
    def _threshold(session: PruningSession) -> str:
        t = [session.pruned_magnitude_threshold(n) for n in session.names]
        t = [x for x in t if x is not None]
        return f"{max(t):.4f}" if t else "– (nothing pruned)"

    def finding(self) -> C.Finding:
        """The Tanaka et al. finding, from this widget's curves (measures the other model if needed)."""
        for m in MODELS:
            if m not in self.curves:
                self.curves[m] = scope_curves(m)
        return finding(self.curves)


def widget(model: str = "mlp", sparsity: float = 0.8) -> ScopeLesson:
    return ScopeLesson(model, sparsity)


def show(model: str = "mlp", sparsity: float = 0.8) -> ScopeLesson:
    """Build and display the lesson; returns it (``app.set(sparsity=0.98)`` moves the slider)."""
    return C.display_app(widget(model, sparsity))
