"""Lesson 2 — magnitude vs random vs saliency: accuracy-vs-sparsity curves of the three criteria.

>>> from pruneviz.lessons import criteria as lesson
>>> app = lesson.show()          # computes the curves on the MLP and the CNN, with a progress bar
>>> app.finding()                # Han et al. 2015 next to the sparsity each criterion reaches within 1 point
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

CRITERIA = ("magnitude", "random", "saliency")
MODELS = ("mlp", "cnn")
RANDOM_SEEDS = 3
SCOPE = "global"  # one ranking over all the network's weights (lesson 3 compares it with per-layer)
SCOPES = {"global": "one global ranking", "layer": "same sparsity in every layer"}


# ------------------------------------------------------------------------------------------------ compute
@dataclass
class CriteriaCurves:
    """Test accuracy of one model at each sparsity, per criterion (random: mean over seeds, and its range)."""

    model: str
    levels: np.ndarray
    baseline: float
    scope: str = SCOPE
    acc: dict[str, np.ndarray] = field(default_factory=dict)
    spread: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def within(self, criterion: str, drop: float = C.ONE_POINT) -> float:
        """Largest sparsity before ``criterion`` first loses more than ``drop`` of accuracy."""
        return C.last_within(self.levels, self.acc[criterion], self.baseline, drop)

    def at(self, criterion: str, sparsity: float) -> float:
        """Accuracy of ``criterion`` at ``sparsity`` (linear interpolation between measured points)."""
        return float(np.interp(sparsity, self.levels, self.acc[criterion]))


def steps(criteria: Sequence[str], levels: Sequence[float], random_seeds: int = RANDOM_SEEDS) -> int:
    """Number of evaluations :func:`criteria_curves` makes (for a progress bar)."""
    return sum(random_seeds if c == "random" else 1 for c in criteria) * len(levels)


@C.single_threaded
def criteria_curves(
    model_name: str,
    criteria: Sequence[str] = CRITERIA,
    levels: Sequence[float] | None = None,
    random_seeds: int = RANDOM_SEEDS,
    progress: Callable[[], None] | None = None,
    on_curve: Callable[[CriteriaCurves, str], None] | None = None,
    scope: str = SCOPE,
) -> CriteriaCurves:
    """Measure the accuracy-vs-sparsity curve of each criterion on demo model ``model_name``.

    ``scope="global"``: one ranking over all weights (the lowest-scored weights of the whole network go
    first); ``"layer"``: every layer pruned to the same sparsity. Saliency's gradients come from 4
    training batches; the random curve is the mean of ``random_seeds`` seeds. ``on_curve(curves, criterion)`` is called as
    each curve completes (a view can draw it at once).
    """
    levels = np.asarray(C.sparsity_levels() if levels is None else levels, dtype=float)
    model = C.demo_model(model_name)
    ev = C.evaluator(model)
    out = CriteriaCurves(model_name, levels, C.accuracy(ev, model), scope)
    calib = C.calib_batches()
    for crit in criteria:
        seeds = range(random_seeds) if crit == "random" else range(1)
        runs = []
        for seed in seeds:
            session = PruningSession(model, criterion=crit, scope=scope, calib_data=calib, seed=seed)
            runs.append(C.accuracy_sweep(session, ev, levels, progress))
        stack = np.stack(runs)
        out.acc[crit] = stack.mean(axis=0)
        out.spread[crit] = (stack.min(axis=0), stack.max(axis=0))
        if on_curve is not None:
            on_curve(out, crit)
    return out


def _reach(s: float, levels: np.ndarray) -> str:
    """'up to 45.0 % sparsity (1.8x)', or 'not even at the first step (2.5 %)' when nothing is within 1 point."""
    if s <= 0:
        return f"not even at the first step ({C.pct(float(levels[1]), 1)})"
    return f"up to <b>{C.pct(s, 1)}</b> sparsity ({C.compression(s):.1f}x)"


@C.single_threaded
def finding(curves: dict[str, CriteriaCurves] | None = None) -> C.Finding:
    """Han et al. 2015 (LeNet-5 / LeNet-300-100: 12x, no loss) next to our magnitude vs random curves."""
    if curves is None:
        curves = {m: criteria_curves(m) for m in MODELS}
    cnn, mlp = curves["cnn"], curves["mlp"]
    s_mag, s_rand = cnn.within("magnitude"), cnn.within("random")
    m_mag, m_rand = mlp.within("magnitude"), mlp.within("random")
    acc70 = {c: cnn.at(c, 0.7) for c in cnn.acc}
    numbers = {
        "cnn_baseline": cnn.baseline, "cnn_magnitude_within_1pt": s_mag, "cnn_random_within_1pt": s_rand,
        "mlp_baseline": mlp.baseline, "mlp_magnitude_within_1pt": m_mag, "mlp_random_within_1pt": m_rand,
        **{f"cnn_{c}_acc_at_70": a for c, a in acc70.items()},
    }
    if "saliency" in cnn.acc:
        numbers["cnn_saliency_within_1pt"] = cnn.within("saliency")
    how = "one global ranking of all weights" if cnn.scope == "global" else "every layer pruned equally"
    ours = (
        f"{how.capitalize()}, <b>no retraining</b>. Within 1 point of the unpruned accuracy:<br>"
        f"• digits CNN (LeNet-5's role, {C.pct(cnn.baseline)}): magnitude {_reach(s_mag, cnn.levels)}, random "
        f"{_reach(s_rand, cnn.levels)}<br>"
        f"• digits MLP (LeNet-300-100's role, {C.pct(mlp.baseline)}): magnitude {_reach(m_mag, mlp.levels)}, "
        f"random {_reach(m_rand, mlp.levels)}<br>"
        f"• CNN at 70 % sparsity: magnitude <b>{C.pct(acc70['magnitude'])}</b>, random <b>{C.pct(acc70['random'])}</b>"
    )
    better = s_mag > s_rand and m_mag > m_rand and acc70["magnitude"] > acc70["random"]
    verdict = (
        "Reproduced in shape: magnitude's curve stays flat far longer than random's on both models. "
        if better else "Not reproduced here: random kept up with magnitude somewhere (see the numbers). "
    ) + (
        f"Without retraining the CNN stops at {C.compression(s_mag):.1f}x, not 12x: Han et al. retrain after "
        "pruning, and that is where the rest comes from (lesson 6)."
    )
    return C.Finding(
        title="the smallest weights matter least",
        source="Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural Networks, "
        "NeurIPS 2015",
        paper="Magnitude pruning of LeNet-300-100 and LeNet-5 on MNIST: <b>12x fewer weights with no loss of "
        "accuracy</b>, after retraining (VGG-16 on ImageNet: 13x).",
        ours=ours,
        verdict=verdict,
        numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class CriteriaLesson(W.VBox):
    """Curves of the three criteria on both demo models, computed live with a progress bar."""

    def __init__(
        self, criteria: Sequence[str] = CRITERIA, levels: Sequence[float] | None = None, scope: str = SCOPE
    ) -> None:
        self.criteria = tuple(criteria)
        self.levels = np.asarray(C.sparsity_levels() if levels is None else levels, dtype=float)
        self.curves: dict[str, CriteriaCurves] = {}
        self.error = C.error_area()
        self.progress = C.progress_bar("Curves")
        self.status = W.HTML("Press <b>Compute</b> (or run the cell) to measure the curves.")
        self.button = W.Button(description="Compute again", icon="refresh", layout=W.Layout(width="160px"))
        self.scope = W.ToggleButtons(options=[(label, k) for k, label in SCOPES.items()], value=scope,
                                     description="Rank weights by:",
                                     style={"description_width": "initial", "button_width": "230px"})
        self.look = W.FloatSlider(
            value=0.7, min=0.0, max=float(self.levels[-1]), step=0.025, description="Look at sparsity:",
            readout_format=".1%", continuous_update=True, layout=W.Layout(width="560px"),
            style={"description_width": "initial"},
        )
        self.look.add_class("pv-lesson-slider")
        self.table = W.HTML()

        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                            subplot_titles=[C.MODEL_LABELS[m] for m in MODELS])
        self._trace: dict[tuple[str, str], int] = {}
        for col, m in enumerate(MODELS, start=1):
            for crit in self.criteria:
                color = C.CRITERION_COLORS.get(crit, C.INK)
                if crit == "random":  # the seeds' range as a band under the mean
                    self._trace[(m, "band_lo")] = len(fig.data)
                    fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line={"width": 0}, showlegend=False,
                                             hoverinfo="skip"), 1, col)
                    self._trace[(m, "band_hi")] = len(fig.data)
                    fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line={"width": 0}, fill="tonexty",
                                             fillcolor="rgba(127,127,127,0.2)", showlegend=False,
                                             hoverinfo="skip"), 1, col)
                self._trace[(m, crit)] = len(fig.data)
                fig.add_trace(go.Scatter(
                    x=[], y=[], mode="lines+markers", name=C.CRITERION_LABELS.get(crit, crit),
                    legendgroup=crit, showlegend=col == 1, marker={"size": 5},
                    line={"color": color, "width": 3, "dash": "dash" if crit == "random" else "solid"},
                    hovertemplate=f"{crit}<br>sparsity %{{x:.1f}} %<br>accuracy %{{y:.1f}} %<extra></extra>",
                ), 1, col)
        fig.update_layout(**C.figure_layout(height=520, title="Test accuracy as more and more weights are removed"))
        fig.update_xaxes(title_text="sparsity (% of all weights removed)", range=[0, 100])
        fig.update_yaxes(title_text="test accuracy (%)", range=[0, 102], col=1)
        self.fig = go.FigureWidget(fig)
        super().__init__([
            self.scope, W.HBox([self.button, self.progress, self.status]), self.error, self.fig, self.look,
            self.table,
        ])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-2")
        self.button.on_click(self._on_click)
        self.look.observe(self._on_look, names="value")
        self.scope.observe(self._on_scope, names="value")

    # callbacks ----------------------------------------------------------------------------------------
    @C.guarded()
    def _on_click(self, _button) -> None:
        self.compute()

    @C.guarded()
    def _on_scope(self, change) -> None:
        self.compute()

    @C.guarded()
    def _on_look(self, change) -> None:
        self._draw_look()

    @C.guarded()
    def run(self) -> None:
        """Compute the curves (guarded: an error is shown in the lesson)."""
        self.compute()

    def compute(self) -> None:
        self.button.disabled = self.scope.disabled = True
        self.curves = {}
        try:
            total = len(MODELS) * steps(self.criteria, self.levels)
            tick = C.Ticker(self.progress, total, "Curves")
            for m in MODELS:
                self.status.value = f"measuring {C.MODEL_LABELS[m]} …"
                self.curves[m] = criteria_curves(m, self.criteria, self.levels, progress=tick.tick,
                                                 on_curve=self._draw_curve, scope=self.scope.value)
            tick.finish("Done")
            self.status.value = f"{total} evaluations on the 360 test digits, every point from the original weights."
            self._draw_look()
        finally:
            self.button.disabled = self.scope.disabled = False

    def _draw_curve(self, curves: CriteriaCurves, crit: str) -> None:
        x = (100 * curves.levels).astype(np.float32)
        with C.updating(self.fig):
            tr = self.fig.data[self._trace[(curves.model, crit)]]
            tr.x, tr.y = x, (100 * curves.acc[crit]).astype(np.float32)
            if crit == "random":
                lo, hi = curves.spread[crit]
                self.fig.data[self._trace[(curves.model, "band_lo")]].update(x=x, y=(100 * lo).astype(np.float32))
                self.fig.data[self._trace[(curves.model, "band_hi")]].update(x=x, y=(100 * hi).astype(np.float32))

    def _draw_look(self) -> None:
        if not self.curves:
            return
        v = float(self.look.value)
        shapes = []
        for col, m in enumerate(MODELS, start=1):
            if m not in self.curves:
                continue
            xref = "x" if col == 1 else "x2"
            shapes.append({"type": "line", "xref": xref, "yref": "paper", "x0": 100 * v, "x1": 100 * v,
                           "y0": 0, "y1": 1, "line": {"color": C.INK, "width": 1.5, "dash": "dot"}})
            base = 100 * (self.curves[m].baseline - C.ONE_POINT)
            shapes.append({"type": "line", "xref": f"{xref} domain", "yref": "y", "x0": 0, "x1": 1,
                           "y0": base, "y1": base, "line": {"color": C.DANGER, "width": 1, "dash": "dash"}})
        with C.updating(self.fig):
            self.fig.layout.shapes = shapes
        rows = []
        for m in MODELS:
            cur = self.curves.get(m)
            if cur is None:
                continue
            cells = ", ".join(
                f"<span style='color:{C.CRITERION_COLORS.get(c, C.INK)}'>{c} <b>{C.pct(cur.at(c, v))}</b></span>"
                for c in self.criteria
            )
            rows.append((C.MODEL_LABELS[m], f"{cells} (unpruned {C.pct(cur.baseline)})"))
            rows.append(("", "within 1 point up to: " + ", ".join(
                f"{c} {C.pct(cur.within(c), 1)}" for c in self.criteria)))
        self.table.value = C.stats_html(rows, f"Test accuracy at {C.pct(v)} sparsity (red dashed line: 1 point "
                                              "below the unpruned accuracy)")

    def finding(self) -> C.Finding:
        """The Han et al. finding from the curves this widget computed."""
        if set(self.curves) != set(MODELS):
            raise RuntimeError("the curves are not computed yet: run app.compute() first.")
        return finding(self.curves)


def widget(criteria: Sequence[str] = CRITERIA, scope: str = SCOPE) -> CriteriaLesson:
    return CriteriaLesson(criteria, scope=scope)


def show(criteria: Sequence[str] = CRITERIA, scope: str = SCOPE) -> CriteriaLesson:
    """Display the lesson, then compute its curves (watch the progress bar); returns the widget."""
    app = widget(criteria, scope)
    return C.display_app(app, app.run)
