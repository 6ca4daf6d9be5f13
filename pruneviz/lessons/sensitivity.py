"""Lesson 5 — sensitivity analysis: prune one layer at a time, see which layers can take it, plan per layer.

>>> from pruneviz.lessons import sensitivity as lesson
>>> app = lesson.show()          # runs the sweep (progress bar), per-layer curves + heatmap, a drop budget
>>> app.finding()                # Li et al. 2017 next to the digits CNN's sensitivities

The sweep is :func:`pruneviz.core.sensitivity.sensitivity_sweep` (inline executor: no process pool inside
a notebook kernel), measured on the *validation* digits; the plan it suggests is then checked on the
*test* digits, which the choice never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruneviz.core import PruningSession
from pruneviz.core.flops import FlopsCounter
from pruneviz.core.sensitivity import SensitivityResult, sensitivity_sweep

from . import common as C

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: What is pruned: whole filters ranked by L1 norm (Li et al.), or single weights by magnitude.
MODES = {"structured": ("l1_filter", "filters (L1 norm)"), "layer": ("magnitude", "single weights (magnitude)")}
#: Where each layer of the demo CNN sits (8x8 stage -> pool -> 4x4 stage -> pool -> classifier).
PLACES = {
    "features.0.weight": "conv1: first layer, 8x8 stage",
    "features.3.weight": "conv2: last conv before the first pooling (8x8 → 4x4)",
    "features.7.weight": "conv3: between the two poolings (4x4 → 2x2)",
    "classifier.0.weight": "fc1: after the last pooling and the flatten",
    "classifier.2.weight": "fc2: output layer",
}
#: Layers directly on either side of a change of feature-map size.
AT_TRANSITION = ("features.3.weight", "features.7.weight")
LAYER_COLORS = ("#9467bd", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2")
PROBE = 0.5  # "how sensitive": the accuracy lost with half of the layer pruned
BUDGET = 0.02  # default accuracy drop allowed per layer when turning the curves into a plan (2 points)


def short(name: str) -> str:
    return name.rsplit(".", 1)[0]


# ------------------------------------------------------------------------------------------------ compute
@C.single_threaded
def sweep(mode: str = "structured", levels: Sequence[float] = LEVELS,
          progress: Callable[[int, int, dict], None] | None = None) -> SensitivityResult:
    """Sensitivity of each layer of the digits CNN, pruned alone, on the validation digits."""
    criterion = MODES[mode][0]
    model = C.demo_model("cnn")
    session = PruningSession(model, criterion=criterion, scope=mode)
    return sensitivity_sweep(session, C.digits().val, levels=levels, criterion=criterion, scope=mode,
                             executor="inline", progress=progress)


def ranking(result: SensitivityResult, probe: float = PROBE) -> list[tuple[str, float]]:
    """Layers sorted from most to least sensitive: (layer, accuracy lost at ``probe`` sparsity)."""
    layers, levels, drop = result.pivot("drop")
    j = int(np.argmin(np.abs(np.asarray(levels) - probe)))
    return sorted(((n, float(drop[i, j])) for i, n in enumerate(layers)), key=lambda t: -t[1])


@dataclass(frozen=True)
class PlanCheck:
    """A per-layer plan from the sweep, checked on the test digits next to a uniform plan of the same cost."""

    mode: str
    max_drop: float
    plan: dict[str, float]
    sparsity: float  # fraction of prunable weights zeroed by the plan
    flops_cut: float  # structured: FLOPs removed by slimming; layer: FLOPs a sparse kernel could skip
    acc_dense: float
    acc_plan: float
    uniform: float  # the uniform sparsity / channel ratio with the closest cost
    acc_uniform: float
    uniform_flops_cut: float


class Planner:
    """Applies plans to one CNN per mode and measures them on the test digits (cached)."""

    def __init__(self) -> None:
        self.example = C.digits().test[0][:1]
        self._s: dict[str, tuple[PruningSession, object, FlopsCounter]] = {}
        self._uniform: dict[str, list[tuple[float, float, float, float]]] = {}

    def _session(self, mode: str):
        if mode not in self._s:
            model = C.demo_model("cnn")
            s = PruningSession(model, criterion=MODES[mode][0], scope=mode)
            self._s[mode] = (s, C.evaluator(model), FlopsCounter(s, self.example))
        return self._s[mode]

    def _cost(self, mode: str, s: PruningSession, fc: FlopsCounter) -> tuple[float, float]:
        rep = fc.report()
        cut = 1 - (rep.structured if mode == "structured" else rep.sparse) / rep.dense
        return s.summary().sparsity, cut

    @C.single_threaded
    def uniform_table(self, mode: str) -> list[tuple[float, float, float, float]]:
        """(ratio, sparsity, flops_cut, test accuracy) of uniform plans on a 5 % grid."""
        if mode not in self._uniform:
            s, ev, fc = self._session(mode)
            rows = []
            for r in np.round(np.arange(0, 0.951, 0.05), 3):
                s.set_global_sparsity(float(r))
                sp, cut = self._cost(mode, s, fc)
                rows.append((float(r), sp, cut, C.accuracy(ev, s.model)))
            s.reset()
            self._uniform[mode] = rows
        return self._uniform[mode]

    @C.single_threaded
    def check(self, result: SensitivityResult, max_drop: float) -> PlanCheck:
        mode = result.scope
        s, ev, fc = self._session(mode)
        dense = ev.baseline.accuracy
        plan = result.suggest(max_drop)
        s.reset()
        s.set_sparsities(plan)
        sp, cut = self._cost(mode, s, fc)
        acc = C.accuracy(ev, s.model)
        s.reset()
        key = 2 if mode == "structured" else 1  # same FLOPs (structured) or same sparsity (weights)
        target = cut if mode == "structured" else sp
        u = min(self.uniform_table(mode), key=lambda row: abs(row[key] - target))
        return PlanCheck(mode, max_drop, plan, sp, cut, float(dense), acc, u[0], u[3], u[2])


@C.single_threaded
def finding(result: SensitivityResult | None = None, planner: Planner | None = None,
            max_drop: float = BUDGET) -> C.Finding:
    """Li et al. 2017 (per-layer sensitivity; sensitive layers at stage transitions) vs the digits CNN."""
    result = result or sweep("structured")
    planner = planner or Planner()
    rank = ranking(result)
    chk = planner.check(result, max_drop)
    what = "filters" if result.scope == "structured" else "weights"
    top2 = [n for n, _ in rank[:2]]
    numbers = {f"drop_at_{int(PROBE * 100)}_{short(n)}": d for n, d in rank}
    numbers.update({"plan_acc": chk.acc_plan, "uniform_acc": chk.acc_uniform, "plan_flops_cut": chk.flops_cut,
                    "uniform_flops_cut": chk.uniform_flops_cut, "plan_sparsity": chk.sparsity,
                    "spread": rank[0][1] - rank[-1][1]})
    order = "".join(f"<br>• {short(n)} ({PLACES.get(n, n)}): <b>{C.points(-d)}</b>" for n, d in rank)
    plan = ", ".join(f"{short(n)} {C.pct(v, 0)}" for n, v in chk.plan.items())
    cost = "of the FLOPs" if result.scope == "structured" else "of the weights"
    ucost = chk.uniform_flops_cut if result.scope == "structured" else chk.uniform
    ours = (
        f"Digits CNN, one layer at a time with {C.pct(PROBE, 0)} of its {what} removed (validation accuracy "
        f"lost):{order}<br>Plan allowing {100 * max_drop:.1f} points per layer ({plan}): removes "
        f"<b>{C.pct(chk.flops_cut if result.scope == 'structured' else chk.sparsity)}</b> {cost}, test accuracy "
        f"<b>{C.pct(chk.acc_plan)}</b>. Closest uniform plan ({C.pct(chk.uniform, 0)} everywhere, {C.pct(ucost)} "
        f"{cost}): <b>{C.pct(chk.acc_uniform)}</b>."
    )
    at_transition = any(n in AT_TRANSITION for n in top2)
    verdict = (
        f"Sensitivities differ widely: from {C.points(-rank[0][1])} to {C.points(-rank[-1][1])} for the same "
        f"{C.pct(PROBE, 0)} cut. "
        + (f"The two most sensitive layers are {short(top2[0])} and {short(top2[1])}"
           + (", and at least one of them sits right at a change of feature-map size, as Li et al. found. "
              if at_transition else ", neither of them at a change of feature-map size: not what Li et al. found. ")
           )
        + "(In a three-conv network almost every layer is near a transition, so this half of the claim is a weak "
        "test here.) "
        + ("Choosing per-layer sparsities from the curves beats the closest uniform plan "
           f"({C.pct(chk.acc_plan)} vs {C.pct(chk.acc_uniform)})."
           if chk.acc_plan > chk.acc_uniform else
           "Here the per-layer plan did not beat the closest uniform plan.")
    )
    return C.Finding(
        title="layers differ in how much pruning they tolerate",
        source="Li, Kadav, Durdanovic, Samet & Graf, Pruning Filters for Efficient ConvNets, ICLR 2017",
        paper="Pruning each layer of VGG-16 and ResNet-56/110 alone on CIFAR-10 shows very different "
        "sensitivities; the sensitive layers sit next to stage transitions (where the feature-map size "
        "changes) and are left alone. VGG-16: <b>34 % fewer FLOPs</b>, error 6.75 % → 6.60 % after retraining.",
        ours=ours,
        verdict=verdict,
        numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class SensitivityLesson(W.VBox):
    """Run the sweep, show per-layer curves and a heatmap, turn a drop budget into a per-layer plan."""

    def __init__(self, mode: str = "structured", max_drop: float = BUDGET) -> None:
        self.results: dict[str, SensitivityResult] = {}
        self.planner = Planner()
        self.error = C.error_area()
        self.progress = C.progress_bar("Sweep")
        self.status = W.HTML()
        self.mode = W.ToggleButtons(options=[(label, k) for k, (_c, label) in MODES.items()], value=mode,
                                    description="Prune:",
                                    style={"description_width": "initial", "button_width": "230px"})
        self.button = W.Button(description="Run the sweep again", icon="refresh", layout=W.Layout(width="200px"))
        self.budget = W.FloatSlider(
            value=100 * max_drop, min=0.5, max=10.0, step=0.5, description="Allowed drop per layer (points):",
            continuous_update=False, readout_format=".1f", layout=W.Layout(width="560px"),
            style={"description_width": "initial"},
        )
        self.budget.add_class("pv-lesson-slider")
        self.stats = W.HTML()
        fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.14,
                            subplot_titles=("Each layer pruned alone (validation accuracy)",
                                            "Accuracy lost (points)"))
        for k, name in enumerate(PLACES):
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=short(name),
                                     line={"color": LAYER_COLORS[k % len(LAYER_COLORS)], "width": 3},
                                     hovertemplate=short(name) + ": %{x:.0f} % pruned → %{y:.1f} %<extra></extra>"),
                          1, 1)
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name="plan", marker={
            "symbol": "diamond", "size": 15, "color": "white", "line": {"color": C.INK, "width": 2.5}},
            hovertemplate="plan: %{x:.0f} %<extra></extra>"), 1, 1)
        fig.add_trace(go.Heatmap(colorscale="Reds", zmin=0, texttemplate="%{z:.0f}", showscale=True,
                                 colorbar={"title": "pts", "len": 0.9},
                                 hovertemplate="%{y}, %{x}: -%{z:.1f} pts<extra></extra>"), 1, 2)
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", showlegend=False, hoverinfo="skip", marker={
            "symbol": "diamond-open", "size": 22, "color": C.INK, "line": {"width": 3}}), 1, 2)
        fig.update_layout(**C.figure_layout(height=530))
        fig.update_xaxes(title_text="sparsity of that layer (%)", range=[0, 100], row=1, col=1)
        fig.update_yaxes(title_text="validation accuracy (%)", range=[0, 102], row=1, col=1)
        fig.update_xaxes(title_text="sparsity of that layer", type="category", row=1, col=2)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=2)
        self.fig = go.FigureWidget(fig)
        self._n_curves = len(fig.data) - 3
        super().__init__([
            W.HBox([self.mode, self.button]), W.HBox([self.progress, self.status]), self.error, self.fig,
            self.budget, self.stats,
        ])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-5")
        self.button.on_click(self._on_click)
        self.mode.observe(self._on_mode, names="value")
        self.budget.observe(self._on_budget, names="value")

    # callbacks ----------------------------------------------------------------------------------------
    @C.guarded()
    def _on_click(self, _b) -> None:
        self.compute(force=True)

    @C.guarded()
    def _on_mode(self, change) -> None:
        self.compute()

    @C.guarded()
    def _on_budget(self, change) -> None:
        self.draw_plan()

    @C.guarded()
    def run(self) -> None:
        self.compute()

    def set(self, max_drop_points: float | None = None, mode: str | None = None) -> None:
        if mode is not None:
            self.mode.value = mode
        if max_drop_points is not None:
            self.budget.value = max_drop_points

    @property
    def result(self) -> SensitivityResult | None:
        return self.results.get(self.mode.value)

    def compute(self, force: bool = False) -> None:
        mode = self.mode.value
        if force or mode not in self.results:
            self.button.disabled = self.mode.disabled = True
            try:
                self.progress.bar_style = "info"

                def progress(done: int, total: int, info: dict) -> None:
                    self.progress.max = max(1, total)
                    self.progress.value = done
                    eta = info.get("eta")
                    layer = info.get("layer")
                    self.status.value = (f"{done}/{total} evaluations" + (f" — {short(layer)}" if layer else "")
                                         + (f", about {eta:.0f} s left" if eta else ""))

                self.results[mode] = sweep(mode, progress=progress)
                self.progress.value = self.progress.max
                self.progress.bar_style = "success"
                r = self.results[mode]
                self.status.value = (f"{len(r.rows)} evaluations in {r.elapsed:.1f} s on the 359 validation digits "
                                     f"(unpruned: {C.pct(r.baseline)})")
            finally:
                self.button.disabled = self.mode.disabled = False
        self.draw_sweep()
        self.draw_plan()

    def draw_sweep(self) -> None:
        r = self.result
        if r is None:
            return
        layers, levels, acc = r.pivot("accuracy")
        _, _, drop = r.pivot("drop")
        x = np.asarray([0.0, *levels]) * 100
        what = "filters" if r.scope == "structured" else "weights"
        with C.updating(self.fig):
            for k in range(self._n_curves):
                tr = self.fig.data[k]
                name = list(PLACES)[k]
                if name in layers:
                    i = layers.index(name)
                    tr.x, tr.y, tr.visible = x.astype(np.float32), (100 * np.r_[r.baseline, acc[i]]).astype(
                        np.float32), True
                else:
                    tr.visible = False
            hm = self.fig.data[self._n_curves + 1]
            hm.z = np.maximum(0, 100 * drop).astype(np.float32)
            hm.x = [f"{round(100 * v)} %" for v in levels]
            hm.y = [short(n) for n in layers]
            self.fig.layout.xaxis.title.text = f"share of that layer's {what} removed (%)"

    def draw_plan(self) -> None:
        r = self.result
        if r is None:
            return
        chk = self.planner.check(r, self.budget.value / 100)
        layers = r.done_layers
        acc = dict(zip(layers, r.pivot("accuracy")[2], strict=True))
        lv = list(r.levels)
        px, py, hx, hy = [], [], [], []
        for n in layers:
            v = chk.plan.get(n, 0.0)
            px.append(100 * v)
            py.append(100 * (r.baseline if v == 0 else acc[n][lv.index(v)]))
            if v > 0:
                hx.append(f"{round(100 * v)} %")
                hy.append(short(n))
        with C.updating(self.fig):
            plan_tr = self.fig.data[self._n_curves]
            plan_tr.x, plan_tr.y = px, py
            cells = self.fig.data[self._n_curves + 2]
            cells.x, cells.y = hx, hy
        cost = ("FLOPs removed (filters physically taken out)" if r.scope == "structured"
                else "sparsity of all prunable weights")
        self.stats.value = C.stats_html([
            ("Per-layer plan", ", ".join(f"{short(n)} <b>{C.pct(v, 0)}</b>" for n, v in chk.plan.items())),
            ("Cost saved", f"<b>{C.pct(chk.flops_cut if r.scope == 'structured' else chk.sparsity)}</b> {cost}"),
            ("Test accuracy of the plan", f"<b>{C.pct(chk.acc_plan)}</b> (unpruned {C.pct(chk.acc_dense)})"),
            ("Closest uniform plan", f"{C.pct(chk.uniform, 0)} in every layer ("
             + (f"{C.pct(chk.uniform_flops_cut)} FLOPs removed" if r.scope == "structured" else "same sparsity")
             + f"): <b>{C.pct(chk.acc_uniform)}</b>"),
        ], f"Every layer pruned as far as its curve allows (≤ {self.budget.value:.1f} points on validation, "
           "with the other layers dense), then all together on the test digits")

    def finding(self) -> C.Finding:
        if "structured" not in self.results:
            self.results["structured"] = sweep("structured")
        return finding(self.results["structured"], self.planner, self.budget.value / 100)


def widget(mode: str = "structured", max_drop: float = BUDGET) -> SensitivityLesson:
    return SensitivityLesson(mode, max_drop)


def show(mode: str = "structured", max_drop: float = BUDGET) -> SensitivityLesson:
    """Display the lesson, then run the sweep (watch the progress bar); returns the widget."""
    app = widget(mode, max_drop)
    return C.display_app(app, app.run)
