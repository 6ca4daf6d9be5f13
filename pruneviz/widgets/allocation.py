"""LayerAllocation: the sparsity every layer has now (in global scope: what the one threshold implies),
with a visible warning when a layer is pruned to >= 99 % (layer collapse)."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..core import SessionEvent
from .base import COLORS, TraceWriter, ViewContext, esc, short_name
from .figures import MainShapes, MainTraces

#: layer collapse: pruned to >= 99 % as the readouts show it (they round to whole percent)
COLLAPSE_AT = 0.985


class LayerAllocation(widgets.VBox):
    """Per-layer sparsity bars (subplot top right) and the collapse warning (``warning``, class
    ``pv-collapse``). ``values``: the sparsities drawn now (fractions, in ``session.names`` order);
    ``collapsed``: the layers pruned to >= 99 %."""

    def __init__(self, ctx: ViewContext, fig: go.FigureWidget) -> None:
        self.ctx, self.fig = ctx, fig
        s = ctx.session
        self.names = list(s.names)
        self.values = np.zeros(len(self.names))
        self.collapsed: list[str] = []
        self.warning = widgets.HTML()
        self.warning.add_class("pv-collapse")
        self.warning.layout.display = "none"
        self._writer = TraceWriter()
        labels = [short_name(t) for t in s.targets]
        if len(set(labels)) != len(labels):
            labels = list(self.names)
        self.fig.data[MainTraces.ALLOC].y = labels
        if len(labels) <= 36:  # every layer named; beyond that plotly picks which labels fit
            self.fig.layout.yaxis2.update(tickmode="linear", tick0=0, dtick=1,
                                          tickfont={"size": 10 if len(labels) <= 16 else 8})
        super().__init__([self.warning])
        self.add_class("pv-allocation")
        self.on_session(None)

    def on_session(self, event: SessionEvent | None) -> None:
        s = self.ctx.session
        sp = s.layer_sparsities()
        self.values = np.array([sp[n] for n in self.names], dtype=np.float64)
        vals32 = self.values.astype(np.float32)
        overall = s.summary().sparsity
        plan = s.plan
        w = self._writer
        with self.fig.batch_update():
            trace = self.fig.data[MainTraces.ALLOC]
            w.set(trace, "x", vals32 * np.float32(100))
            w.set(trace, "marker.color", vals32)
            line = self.fig.layout.shapes[MainShapes.OVERALL]
            w.set(line, "visible", True)
            w.set(line, "x0", 100 * overall)
            w.set(line, "x1", 100 * overall)
            what = {"global": "what one global threshold implies", "layer": "your per-layer plan",
                    "structured": "whole channels removed"}[plan.scope]
            w.set(self.fig.layout.annotations[1], "text",
                  f"Sparsity per layer<br><span style='font-size:11px;color:#6b7280'>{what}; dotted line = "
                  f"overall</span>")
        self.collapsed = [n for n, v in zip(self.names, self.values, strict=True) if v >= COLLAPSE_AT]
        if self.collapsed:
            short = {t.name: short_name(t) for t in s.targets}
            names = ", ".join(f"{esc(short[n])} ({100 * sp[n]:.0f} %)" for n in self.collapsed[:4])
            more = f" and {len(self.collapsed) - 4} more" if len(self.collapsed) > 4 else ""
            self.warning.value = (
                f'<span class="pv-collapse-warning" style="color:{COLORS["warn"]}">⚠ Layer collapse: '
                f"{names}{more} pruned to ≥ 99 %; almost no signal passes through, so accuracy falls apart.</span>"
            )
            self.warning.layout.display = None
        elif self.warning.value:
            self.warning.value = ""
            self.warning.layout.display = "none"
