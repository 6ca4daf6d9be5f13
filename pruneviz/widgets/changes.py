"""WhatChanged: per-class accuracy against the unpruned baseline, and for image data a gallery of the
samples whose prediction flipped ("before -> after").

The gallery has a fixed number of ``Image`` slots created once; an update only swaps their PNG bytes
(small native-resolution PNGs, scaled up in the browser with pixelated rendering).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from ..core.evaluate import EvalResult
from .base import COLORS, TraceWriter, ViewContext, esc
from .figures import MainTraces

N_SLOTS = 8
DISPLAY_PX = 72
MAX_PNG_SIDE = 64


def is_image_batch(x: torch.Tensor) -> bool:
    """4-D inputs with 1 or 3 channels (N, C, H, W) are shown as images."""
    return x.dim() == 4 and x.shape[1] in (1, 3) and x.shape[2] >= 4 and x.shape[3] >= 4


def to_png(sample: torch.Tensor) -> tuple[bytes, int, int]:
    """One (C, H, W) sample as PNG bytes (per-image min-max scaling), at most 64 px a side; and its size."""
    from PIL import Image

    a = sample.detach().float().cpu()
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
    arr = (a.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    if max(img.size) > MAX_PNG_SIDE:
        img.thumbnail((MAX_PNG_SIDE, MAX_PNG_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), img.size[0], img.size[1]


class WhatChanged(widgets.VBox):
    """Per-class bars (subplot bottom right: bars now, black ticks unpruned) and the flipped-sample gallery.

    Parts: ``header`` (HTML), ``slots`` (list of (Image, HTML) pairs, fixed), ``gallery`` (HBox).
    ``flipped``: subset indices of the samples shown now.
    """

    def __init__(self, ctx: ViewContext, fig: go.FigureWidget, class_names: Sequence[str]) -> None:
        self.ctx, self.fig = ctx, fig
        self.class_names = list(class_names)
        self.header = widgets.HTML()
        self.header.add_class("pv-changes-header")
        self.slots: list[tuple[widgets.Image, widgets.HTML]] = []
        self.flipped: list[int] = []
        self._png: OrderedDict[int, tuple[bytes, int, int]] = OrderedDict()
        self._writer = TraceWriter()
        live = ctx.live
        self.images = live is not None and is_image_batch(live.evaluator.x)
        boxes = []
        if self.images:
            for _ in range(N_SLOTS):
                img = widgets.Image(format="png", width=str(DISPLAY_PX))
                lab = widgets.HTML(layout=widgets.Layout(width=f"{DISPLAY_PX + 16}px"))
                lab.add_class("pv-slot-label")
                box = widgets.VBox([img, lab], layout=widgets.Layout(display="none", align_items="center",
                                                                      margin="0 4px"))
                self.slots.append((img, lab))
                boxes.append(box)
        self._boxes = boxes
        self.gallery = widgets.HBox(boxes, layout=widgets.Layout(flex_flow="row wrap"))
        self.gallery.add_class("pv-gallery")
        if live is not None and live.baseline.per_class is not None:
            base = live.baseline
            n = len(base.per_class)
            if len(self.class_names) != n:
                self.class_names = [str(i) for i in range(n)]
            with self.fig.batch_update():
                if n > 40:  # too many to label: hover still names each class
                    self.fig.layout.xaxis4.update(showticklabels=False, title_text=f"class ({n})")
                self.fig.data[MainTraces.CLASS_NOW].x = self.class_names
                self.fig.data[MainTraces.CLASS_BASE].x = self.class_names
                self.fig.data[MainTraces.CLASS_BASE].y = (100 * base.per_class).astype(np.float32)
            self.on_result(live.latest_final or base)
        else:
            self.header.value = '<span class="pv-help">Per-class accuracy needs classification data.</span>'
        super().__init__([self.header, self.gallery])
        self.add_class("pv-changes")

    def _name(self, c: int) -> str:
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(c)

    def _png_for(self, i: int) -> tuple[bytes, int, int]:
        if i not in self._png:
            self._png[i] = to_png(self.ctx.live.evaluator.x[i])
            while len(self._png) > 4 * N_SLOTS:
                self._png.popitem(last=False)
        return self._png[i]

    def on_result(self, r: EvalResult) -> None:
        """A final result: update the per-class bars and the gallery."""
        live = self.ctx.live
        if live is None or r.per_class is None or not r.final:
            return
        with self.fig.batch_update():
            self._writer.set(self.fig.data[MainTraces.CLASS_NOW], "y", (100 * r.per_class).astype(np.float32))
        base = live.baseline
        changed = np.asarray(r.changed if r.changed is not None else [], dtype=np.int64)
        y = live.evaluator.y.numpy()
        before, after = base.predictions[changed], r.predictions[changed]
        now_wrong = (before == y[changed]) & (after != y[changed])
        now_right = (before != y[changed]) & (after == y[changed])
        order = np.concatenate([changed[now_wrong], changed[now_right], changed[~now_wrong & ~now_right]])
        if len(changed) == 0:
            self.header.value = ('<span class="pv-help">No prediction has changed yet: prune more to see which '
                                 "samples flip.</span>")
        else:
            self.header.value = (
                f"<b>{len(changed)} of {r.total}</b> predictions flipped vs. unpruned "
                f'(<span style="color:{COLORS["warn"]}">{int(now_wrong.sum())} now wrong</span>, '
                f'<span style="color:{COLORS["good"]}">{int(now_right.sum())} now right</span>)'
                + (" · before → after:" if self.images else "")
            )
        self.flipped = [int(i) for i in order[: len(self.slots)]]
        for k, ((img, lab), box) in enumerate(zip(self.slots, self._boxes, strict=True)):
            if k >= len(self.flipped):
                if box.layout.display != "none":
                    box.layout.display = "none"
                continue
            i = self.flipped[k]
            png, w, h = self._png_for(i)
            img.value = png
            img.width = str(DISPLAY_PX if w >= h else round(DISPLAY_PX * w / h))
            b, a, t = int(base.predictions[i]), int(r.predictions[i]), int(y[i])
            color = COLORS["good"] if a == t else COLORS["warn"]
            lab.value = (f'<span style="color:{color}"><b>{esc(self._name(b))} → {esc(self._name(a))}</b></span>'
                         f'<br><span style="color:#6b7280">true {esc(self._name(t))}</span>')
            if box.layout.display is not None:
                box.layout.display = None
