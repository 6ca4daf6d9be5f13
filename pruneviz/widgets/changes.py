"""WhatChanged: per-class results against the unpruned baseline (accuracy, or AP for a detector), and a
gallery of the samples whose outcome changed: digits whose prediction flipped, images whose boxes changed.

The gallery has a fixed number of slots created once; an update only swaps their PNG bytes and labels. How a
sample is drawn is its renderer's business (:mod:`pruneviz.widgets.samples`).
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..core.evaluate import EvalResult
from .base import TraceWriter, ViewContext
from .figures import MainTraces
from .samples import make_renderer

N_SLOTS = 8


class WhatChanged(widgets.VBox):
    """Per-class bars (subplot bottom right: bars now, black ticks unpruned) and the changed-sample gallery.

    Parts: ``header`` (HTML), ``slots`` (list of (Image, HTML) pairs, fixed), ``gallery`` (HBox), ``renderer``.
    ``flipped``: subset indices of the samples shown now.
    """

    def __init__(self, ctx: ViewContext, fig: go.FigureWidget, class_names: Sequence[str]) -> None:
        self.ctx, self.fig = ctx, fig
        self.class_names = list(class_names)
        self.header = widgets.HTML()
        self.header.add_class("pv-changes-header")
        self.slots: list[tuple[widgets.Image, widgets.HTML]] = []
        self.flipped: list[int] = []
        self._writer = TraceWriter()
        live = ctx.live
        self.renderer = self._renderer() if live is not None else None
        self.images = self.renderer is not None and self.renderer.images
        boxes = []
        if self.renderer is not None and self.renderer.shows_samples:
            px = self.renderer.display_px
            for _ in range(N_SLOTS):
                img = widgets.Image(format="png", width=str(px),
                                    layout=widgets.Layout(display=None if self.images else "none"))
                lab = widgets.HTML(layout=widgets.Layout(width=f"{px + 16}px"))
                lab.add_class("pv-slot-label")
                box = widgets.VBox([img, lab], layout=widgets.Layout(display="none", align_items="center",
                                                                      margin="0 4px"))
                self.slots.append((img, lab))
                boxes.append(box)
        self._boxes = boxes
        self.gallery = widgets.HBox(boxes, layout=widgets.Layout(flex_flow="row wrap"))
        self.gallery.add_class("pv-gallery")
        self._pending = live is not None and not live.baseline_ready
        if self._pending:  # a big model: the unpruned model is measured first; set up when it is known
            self.header.value = '<span class="pv-help">Measuring the unpruned model…</span>'
        else:
            self._setup()
        super().__init__([self.header, self.gallery])
        self.add_class("pv-changes")

    def _setup(self) -> None:
        """Per-class axes and the unpruned bars from the baseline (or a note when there are no classes)."""
        self._pending = False
        live = self.ctx.live
        if live is None or live.baseline.per_class is None:
            self.header.value = '<span class="pv-help">Per-class results need classification or detection data.</span>'
            return
        base = live.baseline
        n = len(base.per_class)
        if len(self.class_names) != n:
            self.class_names = [str(i) for i in range(n)]
        if self.renderer is not None:
            self.renderer.class_names = self.class_names
        task = live.evaluator.task
        with self.fig.batch_update():
            if n > 40:  # too many to label: hover still names each class
                self.fig.layout.xaxis4.update(showticklabels=False, title_text=f"class ({n})")
            if task.per_class_label and task.per_class_label != "accuracy":
                self.fig.layout.yaxis4.update(title_text=f"{task.per_class_label} (%)")
                self.fig.layout.annotations[3].text = f"{task.per_class_label} per class"
            self.fig.data[MainTraces.CLASS_NOW].x = self.class_names
            self.fig.data[MainTraces.CLASS_BASE].x = self.class_names
            self.fig.data[MainTraces.CLASS_BASE].y = (100 * np.nan_to_num(base.per_class)).astype(np.float32)
        self.on_result(live.latest_final or base)

    def _renderer(self):
        ev = self.ctx.live.evaluator
        hints = self.ctx.hints
        text = hints.get("sample_text")
        text_of = None
        if callable(text):
            text_of = lambda i: text(ev.samples.input(i))  # noqa: E731 - e.g. a vocabulary's decode
        elif text is not None:
            order = ev.order.tolist()
            text_of = lambda i: text[order[i]]  # noqa: E731 - aligned with the data as given
        return make_renderer(ev.task.name, ev.x, ev.y, self.class_names,
                             score_threshold=getattr(ev.task, "score_threshold", 0.3), show=hints.get("show"),
                             text_of=text_of, feature_names=hints.get("feature_names"),
                             weight_norms=self._first_layer_norms)

    def _first_layer_norms(self):
        """Per input feature: the norm of the first layer's current weights on it (a table's feature weight)."""
        s = self.ctx.session
        t = s.targets[0]
        if len(t.shape) != 2:
            return None
        return s.model.get_parameter(t.name).detach().float().norm(dim=0)

    def on_result(self, r: EvalResult) -> None:
        """A final result: update the per-class bars and the gallery."""
        live = self.ctx.live
        if self._pending:
            if live is not None and live.baseline_ready:
                self._setup()  # shows the result the model is at now
            return
        if live is None or r.per_class is None or not r.final:
            return
        with self.fig.batch_update():
            self._writer.set(self.fig.data[MainTraces.CLASS_NOW], "y",
                             (100 * np.nan_to_num(r.per_class)).astype(np.float32))
        base = live.baseline
        if self.renderer is None:
            return
        self.header.value = self.renderer.header(r, base, self.images)
        order = self.renderer.order(r, base)
        self.flipped = [int(i) for i in order[: len(self.slots)]]
        for k, ((img, lab), box) in enumerate(zip(self.slots, self._boxes, strict=True)):
            if k >= len(self.flipped):
                if box.layout.display != "none":
                    box.layout.display = "none"
                continue
            png, w, h, label = self.renderer.render(self.flipped[k], r, base)
            px = self.renderer.display_px
            img.value = png or b""
            img.width = str(px if w >= h else round(px * w / h))
            lab.value = label
            if box.layout.display is not None:
                box.layout.display = None
