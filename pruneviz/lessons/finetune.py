"""Lesson 6 — prune, then fine-tune: collapse and recovery; iterative pruning vs one shot.

>>> from pruneviz.lessons import finetune as lesson
>>> app = lesson.show()          # prunes 70 % of the CNN's filters, fine-tunes; compares schedules on the MLP
>>> app.finding()                # network slimming's collapse-and-recovery next to ours

Training is :func:`pruneviz.core.finetune.finetune` (the masks stay fixed: pruned weights remain exactly
zero) and :func:`pruneviz.core.schedules.run_schedule`; nothing here trains by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruneviz.core import PruningSession
from pruneviz.core.finetune import finetune
from pruneviz.core.schedules import run_schedule

from . import common as C

#: Collapse and recovery: the CNN, whole filters ranked by L1 norm.
RECOVER_CRITERION = "l1_filter"
RATIO = 0.7  # network slimming's 70 % of channels
EPOCHS = 5
LR = 3e-3
#: One shot vs iterative: the MLP (LeNet-300-100's role), one global magnitude threshold.
TARGETS = (0.8, 0.85, 0.9, 0.917, 0.94, 0.96, 0.98)
SCHEDULE_STEPS = 5  # the cubic schedule prunes in 5 steps with 1 epoch after each;
ONESHOT_EPOCHS = SCHEDULE_STEPS  # one shot gets the same 5 epochs after its single prune
SCHEDULES = {"oneshot": "one shot (prune once, then 5 epochs)", "cubic": "iterative (5 cubic steps, 1 epoch each)"}
SCHEDULE_COLORS = {"oneshot": C.DANGER, "cubic": C.GOOD}

Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------------------------ compute
@dataclass
class Recovery:
    """Test accuracy before pruning, right after, and after each fine-tuning epoch."""

    ratio: float
    criterion: str
    dense: float
    pruned: float
    epochs: list[float] = field(default_factory=list)
    sparsity: float = 0.0  # fraction of prunable weights zeroed
    still_zero: bool = True  # every pruned weight was still exactly 0 after fine-tuning

    @property
    def final(self) -> float:
        return self.epochs[-1] if self.epochs else self.pruned


@C.single_threaded
def recover(ratio: float = RATIO, epochs: int = EPOCHS, lr: float = LR, criterion: str = RECOVER_CRITERION,
            progress: Progress | None = None) -> Recovery:
    """Remove ``ratio`` of the filters of every CNN layer, then fine-tune with the masks held fixed."""
    model = C.demo_model("cnn")
    ev = C.evaluator(model)
    session = PruningSession(model, criterion=criterion, scope="structured")
    out = Recovery(ratio, criterion, C.accuracy(ev, model), 0.0)
    session.set_global_sparsity(ratio)
    out.pruned = C.accuracy(ev, model)
    out.sparsity = session.summary().sparsity
    masks = {n: session.mask(n).clone() for n in session.names}
    test = C.digits().test
    res = finetune(session, C.digits().train, epochs=epochs, lr=lr, eval_data=test, num_threads=1,
                   progress=(lambda d, t, _i: progress(d, t)) if progress else None)
    out.epochs = [float(r.eval_accuracy) for r in res.history]
    out.still_zero = all(bool((session.model.get_parameter(n)[~m] == 0).all()) for n, m in masks.items())
    return out


@dataclass
class ScheduleComparison:
    """Final test accuracy after each schedule, per target sparsity (the MLP, global magnitude)."""

    targets: list[float]
    baseline: float
    acc: dict[str, list[float]] = field(default_factory=dict)
    records: dict[tuple[str, float], list] = field(default_factory=dict)

    def within(self, schedule: str, drop: float = C.ONE_POINT) -> float:
        """Highest target still within ``drop`` of the dense accuracy (walking up from the lowest)."""
        return C.last_within(self.targets, self.acc[schedule], self.baseline, drop)


@C.single_threaded
def compare_schedules(targets: Sequence[float] = TARGETS, model_name: str = "mlp",
                      progress: Progress | None = None,
                      on_point: Callable[[ScheduleComparison], None] | None = None) -> ScheduleComparison:
    """One shot vs a cubic schedule to each target, with the same number of fine-tuning epochs."""
    d = C.digits()
    ev0 = C.evaluator(C.demo_model(model_name))
    out = ScheduleComparison(list(targets), float(ev0.baseline.accuracy), {k: [] for k in SCHEDULES})
    total = len(targets) * len(SCHEDULES)
    done = 0
    for target in targets:
        for sched in SCHEDULES:
            model = C.demo_model(model_name)
            session = PruningSession(model, criterion="magnitude", scope="global")
            r = run_schedule(session, target, schedule=sched, steps=SCHEDULE_STEPS, train_data=d.train,
                             eval_data=d.test, epochs_per_step=ONESHOT_EPOCHS if sched == "oneshot" else 1,
                             num_threads=1)
            out.acc[sched].append(float(r.final_accuracy))
            out.records[(sched, target)] = r.records
            done += 1
            if progress is not None:
                progress(done, total)
        if on_point is not None:
            on_point(out)
    return out


@C.single_threaded
def finding(recovery: Recovery | None = None, schedules: ScheduleComparison | None = None) -> C.Finding:
    """Network slimming's collapse and recovery, and iterative vs one-shot pruning, on the digits."""
    rec = recovery or recover()
    cmp_ = schedules or compare_schedules()
    s_one, s_it = cmp_.within("oneshot"), cmp_.within("cubic")
    i12 = int(np.argmin(np.abs(np.asarray(cmp_.targets) - 0.917)))
    numbers = {
        "dense": rec.dense, "pruned": rec.pruned, "recovered": rec.final, "sparsity": rec.sparsity,
        "oneshot_within_1pt": s_one, "iterative_within_1pt": s_it,
        "oneshot_acc_at_12x": cmp_.acc["oneshot"][i12], "iterative_acc_at_12x": cmp_.acc["cubic"][i12],
    }
    ours = (
        f"Digits CNN, {C.pct(rec.ratio, 0)} of the filters of every layer removed (L1 norm):<br>"
        f"• <b>{C.pct(rec.dense)} → {C.pct(rec.pruned)}</b> right after pruning → <b>{C.pct(rec.final)}</b> after "
        f"{len(rec.epochs)} epochs of fine-tuning (pruned weights still exactly 0: {'yes' if rec.still_zero else 'NO'})"
        f"<br>Digits MLP, global magnitude, the same 5 epochs of training either way; within 1 point of "
        f"{C.pct(cmp_.baseline)} up to:<br>• one shot: <b>{C.pct(s_one, 1)}</b> sparsity ({C.compression(s_one):.1f}x)"
        f"<br>• iterative (cubic): <b>{C.pct(s_it, 1)}</b> ({C.compression(s_it):.1f}x)<br>• at 12x: one shot "
        f"{C.pct(numbers['oneshot_acc_at_12x'])}, iterative {C.pct(numbers['iterative_acc_at_12x'])}"
    )
    collapse = rec.pruned < rec.dense - 0.2
    recovered = rec.final >= rec.dense - C.ONE_POINT
    verdict = (
        ("Collapse reproduced: accuracy falls to near chance right after pruning. " if collapse else
         "Only a partial collapse here. ")
        + ("Recovery reproduced: fine-tuning brings it back within 1 point. " if recovered else
           f"Recovery mostly reproduced: fine-tuning wins back {C.points(rec.final - rec.pruned)} but stays "
           f"{C.points(rec.final - rec.dense)} below the unpruned network (a few epochs on 1,078 digits, not "
           "the paper's full retraining). ")
        + (f"Iterative pruning reaches a higher sparsity at the same accuracy than one shot ({C.pct(s_it, 1)} vs "
           f"{C.pct(s_one, 1)})." if s_it > s_one else
           "Iterative pruning did not reach a higher sparsity than one shot here.")
    )
    return C.Finding(
        title="accuracy collapses after pruning and comes back with fine-tuning",
        source="Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017 "
        "(figures from the official re-implementation); iterative pruning: Han et al. 2015, schedule: "
        "Zhu & Gupta 2017",
        paper="VGG-19 on CIFAR-10, 70 % of the channels removed: <b>93.77 % → 32.54 %</b> right after pruning → "
        "<b>93.78 %</b> after fine-tuning. Iterative pruning: Han et al. report that rounds of pruning and "
        "retraining raise AlexNet's pruning rate from <b>5x</b> (one aggressive step) <b>to 9x</b> without loss; "
        "Zhu & Gupta prune on a cubic schedule, big steps first.",
        ours=ours,
        verdict=verdict,
        numbers=numbers,
    )


# ------------------------------------------------------------------------------------------------- widget
class FinetuneLesson(W.VBox):
    """Left: collapse and recovery of the CNN. Right: one shot vs iterative on the MLP."""

    def __init__(self, ratio: float = RATIO, epochs: int = EPOCHS) -> None:
        self.recovery: Recovery | None = None
        self.schedules: ScheduleComparison | None = None
        self.error = C.error_area()
        self.progress = C.progress_bar("Training")
        self.status = W.HTML()
        self.ratio = W.SelectionSlider(
            options=[(f"{round(100 * r)} %", r) for r in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)], value=ratio,
            description="Filters removed per layer:", continuous_update=False, layout=W.Layout(width="460px"),
            style={"description_width": "initial"},
        )
        self.ratio.add_class("pv-lesson-slider")
        self.epochs = W.IntSlider(value=epochs, min=1, max=10, description="Fine-tuning epochs:",
                                  continuous_update=False, layout=W.Layout(width="400px"),
                                  style={"description_width": "initial"})
        self.go_recover = W.Button(description="Prune and fine-tune", icon="play", button_style="primary",
                                   layout=W.Layout(width="190px"))
        self.go_schedules = W.Button(description="Compare schedules", icon="play", layout=W.Layout(width="190px"))
        self.stats = W.HTML()
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
            "CNN: prune whole filters, then fine-tune", "MLP: one shot vs iterative (same training)"))
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers+text", name="test accuracy", showlegend=False,
                                 line={"color": C.INK, "width": 2}, marker={"size": 14},
                                 texttemplate="%{y:.1f}", textposition="top center",
                                 hovertemplate="%{x}: %{y:.1f} %<extra></extra>"), 1, 1)
        for k, label in SCHEDULES.items():
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=label,
                                     line={"color": SCHEDULE_COLORS[k], "width": 3},
                                     hovertemplate=label + "<br>%{x:.1f} % → %{y:.1f} %<extra></extra>"), 1, 2)
        fig.update_layout(**C.figure_layout(height=520))
        fig.update_yaxes(title_text="test accuracy (%)", range=[0, 108], row=1, col=1)
        fig.update_xaxes(title_text="stage", type="category", row=1, col=1)
        fig.update_yaxes(title_text="test accuracy after training (%)", range=[0, 102], row=1, col=2)
        fig.update_xaxes(title_text="target sparsity (% of weights removed)", row=1, col=2)
        self.fig = go.FigureWidget(fig)
        super().__init__([
            W.HBox([self.ratio, self.epochs, self.go_recover]), W.HBox([self.go_schedules, self.progress,
                                                                        self.status]),
            self.error, self.fig, self.stats,
        ])
        self.add_class("pv-lesson")
        self.add_class("pv-lesson-6")
        self.go_recover.on_click(self._on_recover)
        self.go_schedules.on_click(self._on_schedules)

    # callbacks ----------------------------------------------------------------------------------------
    @C.guarded()
    def _on_recover(self, _b) -> None:
        self.run_recovery()

    @C.guarded()
    def _on_schedules(self, _b) -> None:
        self.run_schedules()

    @C.guarded()
    def run(self) -> None:
        """Both experiments (what ``show()`` runs)."""
        self.run_recovery()
        self.run_schedules()

    def _busy(self, busy: bool) -> None:
        for w in (self.go_recover, self.go_schedules, self.ratio, self.epochs):
            w.disabled = busy

    def run_recovery(self) -> None:
        self._busy(True)
        try:
            tick = C.Ticker(self.progress, 1, "Fine-tuning")

            def progress(done: int, total: int) -> None:
                self.progress.max, self.progress.value = max(1, total), done

            self.status.value = f"fine-tuning the CNN with {C.pct(self.ratio.value, 0)} of its filters removed …"
            self.recovery = recover(float(self.ratio.value), int(self.epochs.value), progress=progress)
            tick.finish("Fine-tuned")
            self.status.value = ""
            self.draw()
        finally:
            self._busy(False)

    def run_schedules(self) -> None:
        self._busy(True)
        try:
            tick = C.Ticker(self.progress, len(TARGETS) * len(SCHEDULES), "Schedules")

            def progress(done: int, total: int) -> None:
                tick.done = done - 1
                tick.tick()
                self.status.value = f"{done}/{total} schedule runs"

            self.schedules = compare_schedules(progress=progress, on_point=self._draw_schedules)
            tick.finish("Schedules done")
            self.status.value = ""
            self.draw()
        finally:
            self._busy(False)

    def _draw_schedules(self, cmp_: ScheduleComparison) -> None:
        n = len(cmp_.acc["cubic"])
        with C.updating(self.fig):
            for k, sched in enumerate(SCHEDULES, start=1):
                self.fig.data[k].x = (100 * np.asarray(cmp_.targets[:n])).astype(np.float32)
                self.fig.data[k].y = (100 * np.asarray(cmp_.acc[sched][:n])).astype(np.float32)
            line = 100 * (cmp_.baseline - C.ONE_POINT)
            self.fig.layout.shapes = [{"type": "line", "xref": "x2 domain", "yref": "y2", "x0": 0, "x1": 1,
                                       "y0": line, "y1": line, "line": {"color": C.INK, "dash": "dash", "width": 1}}]

    def draw(self) -> None:
        rows = []
        r = self.recovery
        if r is not None:
            xs = ["unpruned", "pruned", *[f"epoch {i}" for i in range(1, len(r.epochs) + 1)]]
            ys = [r.dense, r.pruned, *r.epochs]
            colors = [C.KEPT, C.DANGER, *[C.GOOD] * len(r.epochs)]
            with C.updating(self.fig):
                tr = self.fig.data[0]
                tr.x, tr.y = xs, (100 * np.asarray(ys)).astype(np.float32)
                tr.marker.color = colors
            rows.append(("CNN", f"{C.pct(r.ratio, 0)} of filters removed ({C.pct(r.sparsity)} of weights): "
                                f"{C.pct(r.dense)} → <b style='color:{C.DANGER}'>{C.pct(r.pruned)}</b> → "
                                f"<b style='color:{C.GOOD}'>{C.pct(r.final)}</b> after {len(r.epochs)} epochs; "
                                f"pruned weights still exactly 0: {'yes' if r.still_zero else 'NO'}"))
        c = self.schedules
        if c is not None:
            self._draw_schedules(c)
            rows.append(("MLP", f"within 1 point of {C.pct(c.baseline)} up to: one shot <b>{C.pct(c.within('oneshot'), 1)}"
                                f"</b>, iterative <b>{C.pct(c.within('cubic'), 1)}</b> sparsity (dashed line: 1 point "
                                "below the unpruned accuracy)"))
        self.stats.value = C.stats_html(rows)

    def finding(self) -> C.Finding:
        return finding(self.recovery, self.schedules)


def widget(ratio: float = RATIO, epochs: int = EPOCHS) -> FinetuneLesson:
    return FinetuneLesson(ratio, epochs)


def show(ratio: float = RATIO, epochs: int = EPOCHS) -> FinetuneLesson:
    """Display the lesson, then run both experiments (watch the progress bar); returns the widget."""
    app = widget(ratio, epochs)
    return C.display_app(app, app.run)
