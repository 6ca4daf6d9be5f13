"""Lesson 7 — the same pruning on images, text, audio and tables: which data tolerates most sparsity, and
which layers of a text model are sensitive (the embedding, the recurrent weights, the output layer).

>>> from pruneviz.lessons import modalities as lesson
>>> app = lesson.show()          # curves on four demo models, then the text model's layer sensitivities
>>> app.finding()                # Narang et al. 2017 next to what the demos tolerate here
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import Evaluator
from pruneviz.data.demos import DEMOS

from . import common as C

#: modality -> demo model; every model is pruned the same way (magnitude, the same sparsity in every layer)
MODELS = {"image": "cnn", "text": "text_gru", "audio": "audio_cnn", "table": "tabular_mlp"}
LABELS = {"image": "image: digits CNN", "text": "text: review GRU", "audio": "audio: spoken-digit CNN",
          "table": "table: breast-cancer MLP"}
COLORS = {"image": C.KEPT, "text": "#ff7f0e", "audio": "#2ca02c", "table": "#9467bd"}
LEVELS = tuple(np.round(np.arange(0.0, 0.951, 0.05), 3)) + (0.98,)
TEXT_SUBSET = 1000  # the app's fixed stratified subset of the 2,561 test snippets
#: the text model's layer groups, in reading order, and the sparsities their sensitivity is measured at
TEXT_LAYERS = {"embedding": ("embedding.weight",), "recurrent (GRU)": ("gru.weight_ih_l0", "gru.weight_hh_l0"),
               "output layer": ("head.weight",)}
SENSITIVITY_LEVELS = (0.5, 0.8, 0.95)


# ------------------------------------------------------------------------------------------------ compute
@dataclass
class ModalityCurves:
    """Accuracy (0..1) per sparsity for each modality, and each one's unpruned accuracy."""

    levels: np.ndarray
    acc: dict[str, np.ndarray] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)

    def within(self, modality: str, drop: float = C.ONE_POINT) -> float:
        return C.last_within(self.levels, self.acc[modality], self.baseline[modality], drop)


@dataclass
class LayerSensitivity:
    """The text model's accuracy drop (points, 0..1) when one layer group alone is pruned to each level."""

    levels: tuple[float, ...]
    baseline: float
    drop: dict[str, list[float]] = field(default_factory=dict)

    def most_sensitive(self, level: float = 0.8) -> str:
        k = self.levels.index(level)
        return max(self.drop, key=lambda g: self.drop[g][k])


def _setup(modality: str) -> tuple[PruningSession, Evaluator]:
    demo = DEMOS[MODELS[modality]]
    model = demo.load()
    data, calib = demo.data()
    opts = demo.options()
    session = PruningSession(model, scope="layer", embeddings=opts.get("embeddings", False), calib_data=calib)
    return session, Evaluator(model, data, subset_size=opts.get("subset_size"), first_chunk=512, chunk_size=512)


def steps(levels: Sequence[float] = LEVELS) -> int:
    """Evaluations :func:`modality_curves` and :func:`text_sensitivity` make together (a progress bar's total)."""
    return len(MODELS) * len(levels) + len(TEXT_LAYERS) * len(SENSITIVITY_LEVELS)


@C.single_threaded
def modality_curves(levels: Sequence[float] = LEVELS, progress: Callable[[], None] | None = None,
                    on_curve: Callable[[ModalityCurves, str], None] | None = None) -> ModalityCurves:
    """Accuracy vs the sparsity of every layer (magnitude), for the four demo models."""
    out = ModalityCurves(np.asarray(levels, dtype=float))
    for modality in MODELS:
        session, ev = _setup(modality)
        out.baseline[modality] = C.accuracy(ev, session.model)
        out.acc[modality] = C.accuracy_sweep(session, ev, levels, progress)
        if on_curve is not None:
            on_curve(out, modality)
    return out


@C.single_threaded
def text_sensitivity(levels: Sequence[float] = SENSITIVITY_LEVELS,
                     progress: Callable[[], None] | None = None) -> LayerSensitivity:
    """Prune one layer group of the text model at a time (the rest dense) and measure the accuracy lost."""
    session, ev = _setup("text")
    base = C.accuracy(ev, session.model)
    out = LayerSensitivity(tuple(levels), base)
    try:
        for group, names in TEXT_LAYERS.items():
            drops = []
            for v in levels:
                session.reset()
                session.set_sparsities(dict.fromkeys(names, float(v)))
                drops.append(base - C.accuracy(ev, session.model))
                if progress is not None:
                    progress()
            out.drop[group] = drops
    finally:
        session.reset()
    return out


def finding(curves: ModalityCurves | None = None, sens: LayerSensitivity | None = None) -> C.Finding:
    """Narang et al. 2017 (RNNs pruned to ~90 % with a small loss, while training) next to what our four demo
    models tolerate with no retraining at all, and which text layer breaks first."""
    curves = curves if curves is not None else modality_curves()
    sens = sens if sens is not None else text_sensitivity()
    reach = {m: curves.within(m) for m in MODELS}
    best, worst = max(reach, key=reach.get), min(reach, key=reach.get)
    k80 = sens.levels.index(0.8)
    fragile = sens.most_sensitive(0.8)
    numbers = {**{f"{m}_within_1pt": reach[m] for m in MODELS}, **{f"{m}_baseline": curves.baseline[m] for m in MODELS},
               **{f"text_drop_at_80_{g.split()[0]}": d[k80] for g, d in sens.drop.items()}}
    lines = "<br>".join(f"• {LABELS[m]} ({C.pct(curves.baseline[m])}): within 1 point up to <b>{C.pct(reach[m], 0)}</b>"
                        for m in MODELS)
    drops = ", ".join(f"{g} −{100 * d[k80]:.1f} points" for g, d in sens.drop.items())
    ours = (f"Magnitude pruning, the same sparsity in every layer, <b>no retraining</b>:<br>{lines}<br>"
            f"Text model, one layer group at 80 % (the rest intact): {drops}.")
    verdict = (f"Here {LABELS[best].split(':')[0]} tolerates the most sparsity and {LABELS[worst].split(':')[0]} "
               f"the least; in the text model the <b>{fragile}</b> breaks first. ")
    verdict += ("Narang et al. reach 90 % because they prune gradually while training; without any retraining our "
                "recurrent text model stops well before that (lesson 6 shows what fine-tuning gives back)."
                if reach["text"] < 0.9 else "Even without retraining the text model reaches the paper's 90 %.")
    return C.Finding(
        title="recurrent models can be pruned hard, if they retrain",
        source="Narang, Elsen, Diamos & Sengupta, Exploring Sparsity in Recurrent Neural Networks, ICLR 2017",
        paper="Recurrent (RNN and GRU) speech models pruned <b>to about 90 % sparsity</b> while they train, for a "
              "small loss of accuracy and a model about 8x smaller.",
        ours=ours, verdict=verdict, numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class ModalitiesLesson(W.VBox):
    """Four accuracy-loss curves (left) and the text model's layer sensitivities (right), one figure."""

    def __init__(self, levels: Sequence[float] = LEVELS) -> None:
        self.levels = tuple(levels)
        self.curves: ModalityCurves | None = None
        self.sens: LayerSensitivity | None = None
        self.error = C.error_area()
        self.progress = C.progress_bar("Models")
        self.status = W.HTML("Press <b>Compute</b> (or run the cell) to prune the four models.")
        self.button = W.Button(description="Compute again", icon="refresh", layout=W.Layout(width="160px"))
        fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                            subplot_titles=("Accuracy lost as every layer is pruned", "Text model: one layer at a time"))
        for m in MODELS:
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=LABELS[m], marker={"size": 5},
                                     line={"color": COLORS[m], "width": 3},
                                     hovertemplate=f"{m}<br>sparsity %{{x:.0f}} %<br>lost %{{y:.1f}} points<extra></extra>"),
                          1, 1)
        for k, v in enumerate(SENSITIVITY_LEVELS):
            fig.add_trace(go.Bar(x=list(TEXT_LAYERS), y=[0] * len(TEXT_LAYERS), name=f"layer at {v:.0%}",
                                 marker={"color": ["#fdd0a2", "#fd8d3c", "#d94801"][k % 3]}), 1, 2)
        fig.update_layout(**C.figure_layout(height=500, barmode="group"))
        fig.update_xaxes(title_text="sparsity of every layer (%)", range=[0, 100], row=1, col=1)
        fig.update_yaxes(title_text="accuracy lost (points)", row=1, col=1)
        fig.update_yaxes(title_text="accuracy lost (points)", row=1, col=2)
        self.fig = go.FigureWidget(fig)
        self.table = W.HTML()
        super().__init__([W.HBox([self.button, self.progress, self.status]), self.error, self.fig, self.table])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-7")
        self.button.on_click(self._on_click)

    @C.guarded()
    def _on_click(self, _button) -> None:
        self.compute()

    @C.guarded()
    def run(self) -> None:
        self.compute()

    def compute(self) -> None:
        self.button.disabled = True
        try:
            tick = C.Ticker(self.progress, steps(self.levels), "Models")
            self.status.value = "pruning the four models …"
            self.curves = modality_curves(self.levels, progress=tick.tick, on_curve=self._draw_curve)
            self.status.value = "pruning the text model one layer at a time …"
            self.sens = text_sensitivity(progress=tick.tick)
            self._draw_sensitivity()
            tick.finish("Done")
            self.status.value = "every point is measured from the original weights, no retraining."
            rows = [(LABELS[m], f"unpruned {C.pct(self.curves.baseline[m])}; within 1 point up to "
                                f"{C.pct(self.curves.within(m), 0)}") for m in MODELS]
            self.table.value = C.stats_html(rows, "How far each model goes within 1 point of its accuracy")
        finally:
            self.button.disabled = False

    def _draw_curve(self, curves: ModalityCurves, modality: str) -> None:
        k = list(MODELS).index(modality)
        with C.updating(self.fig):
            tr = self.fig.data[k]
            tr.x = (100 * curves.levels).astype(np.float32)
            tr.y = (100 * (curves.baseline[modality] - curves.acc[modality])).astype(np.float32)

    def _draw_sensitivity(self) -> None:
        with C.updating(self.fig):
            for k in range(len(SENSITIVITY_LEVELS)):
                self.fig.data[len(MODELS) + k].y = [100 * self.sens.drop[g][k] for g in TEXT_LAYERS]

    def finding(self) -> C.Finding:
        if self.curves is None or self.sens is None:
            raise RuntimeError("the curves are not computed yet: run app.compute() first.")
        return finding(self.curves, self.sens)


def widget() -> ModalitiesLesson:
    return ModalitiesLesson()


def show() -> ModalitiesLesson:
    """Display the lesson, then compute (watch the progress bar); returns the widget."""
    app = widget()
    return C.display_app(app, app.run)
