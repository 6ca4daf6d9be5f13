"""LiveAccuracy: the accuracy (with its confidence interval) while it refines, progress, the unpruned
baseline, and the trail of (weights removed, accuracy) over every final state visited.

Results arrive from the live evaluator's worker thread; the handlers only format labels and assign a few
small arrays.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..core import SessionEvent
from ..core.evaluate import EvalResult
from .base import SCOPE_LABELS, TraceWriter, ViewContext, esc, get_criterion_label
from .figures import N_TRAIL_SLOTS, MainShapes, MainTraces

_TAGS = re.compile(r"<[^>]+>")


#: how the views name and format a task's metrics (others: their key and 4 significant digits)
METRIC_TEXT = {"map50": ("mAP@0.5", ".3f"), "map": ("mAP@[.5:.95]", ".3f"), "map75": ("mAP@0.75", ".3f"),
               "r2": ("R²", ".3f"), "mse": ("MSE", ".4g"), "mae": ("MAE", ".4g")}


def metric_text(key: str, value: float) -> str:
    label, fmt = METRIC_TEXT.get(key, (key, ".4g"))
    return f"{label} {value:{fmt}}"


def result_text(r: EvalResult) -> str:
    """'accuracy 97.2 % ± 1.1 (128/360 samples) · loss 0.094'; for other tasks their headline metric with its
    interval ('mAP@0.5 0.941 ± 0.012 (48/300 samples) · mAP@[.5:.95] 0.772')."""
    parts = []
    if r.accuracy is not None:
        lo, hi = r.accuracy_ci or (r.accuracy, r.accuracy)
        parts.append(f"accuracy {100 * r.accuracy:.1f} % ± {50 * (hi - lo):.1f} ({r.n}/{r.total} samples)")
    elif r.value is not None and r.metric != "loss" and r.metric not in r.custom:
        label, fmt = METRIC_TEXT.get(r.metric, (r.metric, ".4g"))
        ci = f" ± {(r.value_ci[1] - r.value_ci[0]) / 2:{fmt}}" if r.value_ci is not None else ""
        parts.append(f"{label} {r.value:{fmt}}{ci} ({r.n}/{r.total} samples)")
    else:
        parts.append(f"({r.n}/{r.total} samples)")
    parts.extend(metric_text(k, v) for k, v in r.metrics.items()
                 if k in ("map",) or (k == "mae" and r.metric == "r2"))
    if r.loss is not None:
        parts.append(f"loss {r.loss:.3f}")
    parts.extend(f"{k} {v:.4g}" for k, v in r.custom.items())
    return " · ".join(parts)


class LiveAccuracy(widgets.VBox):
    """Parts: ``label`` (HTML, class ``pv-accuracy``), ``progress`` (IntProgress n/total), ``baseline_label``.

    ``text``: the label as plain text; ``trail``: {(criterion, scope): {weights removed %: accuracy %}}.
    """

    def __init__(self, ctx: ViewContext, fig: go.FigureWidget) -> None:
        self.ctx, self.fig = ctx, fig
        live = ctx.live
        self.label = widgets.HTML()
        self.label.add_class("pv-accuracy")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="96%", height="14px"))
        self.progress.add_class("pv-progress")
        self.baseline_label = widgets.HTML()
        self.baseline_label.add_class("pv-baseline")
        self.text = ""
        self.trail: OrderedDict[tuple[str, str], dict[float, float]] = OrderedDict()
        self._slots: list[tuple[str, str] | None] = [None] * N_TRAIL_SLOTS
        self._writer = TraceWriter()
        self._shown: EvalResult | None = None
        self._stale = False
        self.metric_name = "accuracy"
        self.percent = True
        self._pending = False
        if live is None:
            self.label.value = '<span class="pv-help">No evaluation data: pass data=(inputs, labels) to see accuracy.</span>'
            self.progress.layout.display = "none"
        elif live.baseline_ready:
            self._setup(live)
        else:  # a big model: the worker measures the unpruned model first (seconds); set up when it is known
            self._pending = True
            self.label.value = '<span class="pv-help">Measuring the unpruned model…</span>'
            self.baseline_label.value = '<span class="pv-help">unpruned: measuring…</span>'
        super().__init__([self.label, self.progress, self.baseline_label])
        self.add_class("pv-live-accuracy")

    def _setup(self, live: Any) -> None:
        """Metric, axes and the unpruned line from the baseline; then the result the model is at now."""
        self._pending = False
        base = live.baseline
        task = live.evaluator.task
        self.metric_name = task.metric if base.value is not None else "loss"
        self.percent = task.percent and base.value is not None
        self.progress.max = max(1, base.total)
        self.baseline_label.value = f'<span class="pv-help">unpruned: {esc(result_text(base))}</span>'
        if base.value is None:
            self.fig.layout.yaxis3.update(title_text="loss", range=None, autorange=True)
            self.fig.layout.annotations[2].text = "Loss vs. weights removed"
        else:
            label = task.metric_label
            if not self.percent:
                top = max(1.0, float(base.value)) * 1.03 if task.name == "detection" else None
                self.fig.layout.yaxis3.update(title_text=label, range=[0, top] if top else None,
                                              autorange=top is None)
                self.fig.layout.annotations[2].text = f"{label} vs. weights removed"
                for k in range(N_TRAIL_SLOTS):
                    self.fig.data[MainTraces.TRAIL0 + k].hovertemplate = (
                        "%{x:.1f} % removed: %{y:.3f}<extra>%{fullData.name}</extra>")
            value = self._metric(base)
            line = self.fig.layout.shapes[MainShapes.TRAIL_BASE]
            line.update(visible=True, y0=value, y1=value)
        self.show(live.latest if live.latest is not None else base, stale=live.latest is None)
        final = live.latest_final
        if final is not None and final.generation == self.ctx.session.generation:
            self.on_result(final)  # the trail starts with the point the model is at now
        elif self.ctx.session.summary().pruned_params == 0:
            self.on_result(base)  # the unpruned model: the trail's first point, before any move

    def _metric(self, r: EvalResult) -> float | None:
        """The trail's y value: the headline metric (in % when it is a fraction), else the loss."""
        if r.value is not None and self.metric_name != "loss":
            return 100 * r.value if self.percent else r.value
        return r.loss

    def show(self, r: EvalResult, stale: bool = False) -> None:
        """Show result ``r`` in the label and progress bar (greyed while ``stale``)."""
        self._shown, self._stale = r, stale
        text = result_text(r)
        head, sep, rest = text.partition(" ± ")
        if not sep:
            head, rest = "", text
        big = f'<div class="pv-big">{esc(head)}</div>' if head else ""
        cls = " pv-stale" if stale else ""
        self.label.value = f'<div class="pv-acc{cls}">{big}<div>{"± " if sep else ""}{esc(rest)}</div></div>'
        self.text = _TAGS.sub("", text)
        self.progress.max = max(1, r.total)
        self.progress.value = r.n
        self.progress.bar_style = "success" if r.final and not stale else "info"

    def on_session(self, event: SessionEvent | None) -> None:
        """A new plan: the result shown belongs to the previous weights until the first estimate arrives."""
        if self._shown is not None and not self._stale:
            self.show(self._shown, stale=True)

    def on_error(self, message: str) -> None:
        self.progress.bar_style = "danger"
        self.label.value = '<span style="color:#b91c1c">evaluation failed (see the message above)</span>'
        self.text = "evaluation failed"
        self._shown = None

    def on_result(self, r: EvalResult) -> None:
        """Called with the session lock held and the result's generation current."""
        if self._pending:
            if not self.ctx.live.baseline_ready:
                return
            self._setup(self.ctx.live)
        self.show(r)
        value = self._metric(r)
        if not r.final or value is None:
            return
        s = self.ctx.session
        plan = s.plan
        key = (plan.criterion, plan.scope)
        x = round(100 * s.summary().sparsity, 3)
        series = self.trail.setdefault(key, {})
        series[x] = float(value)
        self.trail.move_to_end(key)
        slot = self._slot_for(key)
        xs = np.array(sorted(series), dtype=np.float32)
        ys = np.array([series[k] for k in sorted(series)], dtype=np.float32)
        w = self._writer
        with self.fig.batch_update():
            trace = self.fig.data[MainTraces.TRAIL0 + slot]
            w.set(trace, "name", f"{get_criterion_label(key[0])} · {SCOPE_LABELS.get(key[1], key[1])}")
            w.set(trace, "visible", True)
            w.set(trace, "x", xs)
            w.set(trace, "y", ys)
            now = self.fig.data[MainTraces.TRAIL_NOW]
            w.set(now, "x", np.array([x], dtype=np.float32))
            w.set(now, "y", np.array([value], dtype=np.float32))

    def _slot_for(self, key: tuple[str, str]) -> int:
        if key in self._slots:
            return self._slots.index(key)
        if None in self._slots:
            slot = self._slots.index(None)
        else:  # recycle the series used least recently
            order = list(self.trail)
            slot = min(range(N_TRAIL_SLOTS), key=lambda i: order.index(self._slots[i]))
        self._slots[slot] = key
        return slot
