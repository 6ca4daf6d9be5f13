"""WeightHistogram: the selected layer's original weights, split into kept and pruned mass.

Pre-binned in Python: the bin edges are fixed per layer (up to 80 bins over the original weights' range), each
weight's bin index is computed once per layer, and an update is one weighted ``bincount`` of the keep-mask.
Only 2 x 80 int32 counts go to the browser, whatever the layer's size.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from ..core import SessionEvent
from ..core.targets import Target
from .base import COLORS, TraceWriter, ViewContext, esc, fmt_count, layer_label, short_name
from .figures import MainShapes, MainTraces

MAX_BINS = 80
#: the names of the row blocks of a layer with several (see Target.gates)
GATE_NAMES = {"LSTM": ("input gate", "forget gate", "cell gate", "output gate"),
              "GRU": ("reset gate", "update gate", "new gate"), "MultiheadAttention": ("query", "key", "value")}


def part_options(t: Target) -> list[tuple[str, int]]:
    """The histogram's part picker for ``t``: the whole tensor (-1), or one of its gate / q, k, v blocks."""
    if t.gates == 1:
        return [("whole tensor", -1)]
    names = GATE_NAMES.get(t.kind, tuple(f"block {k}" for k in range(t.gates)))
    return [("all " + ("gates" if "gate" in names[0] else "of q, k, v"), -1)] + [(n, k) for k, n in enumerate(names)]


def part_of(x: torch.Tensor, t: Target, part: int) -> torch.Tensor:
    """Block ``part`` of ``x`` (a weight or its mask) along the target's channel dimension (-1: all)."""
    if part < 0:
        return x
    block = t.rows // t.gates
    return x.narrow(t.channel_dim, part * block, block)


def n_bins(numel: int) -> int:
    """~80 bins for big layers; fewer for small ones (2 sqrt(n), at least 16) so bars are not mostly empty."""
    return int(min(MAX_BINS, max(16, round(2 * numel**0.5))))


class _Bins:
    """Fixed bins of one layer's original weights."""

    def __init__(self, weights: torch.Tensor) -> None:
        w = weights.detach().reshape(-1).float()
        self.n = n = n_bins(w.numel())
        lo, hi = (float(v) for v in torch.aminmax(w))
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.width = (hi - lo) / n
        self.edges = np.linspace(lo, hi, n + 1)
        self.centers = ((self.edges[:-1] + self.edges[1:]) / 2).astype(np.float32)
        idx = torch.div(w - lo, self.width, rounding_mode="floor").clamp_(0, n - 1)
        self.index = idx.to(torch.uint8)
        self.total = torch.bincount(self.index, minlength=n).numpy().astype(np.int64)
        self.exact_dtype = torch.float32 if w.numel() < 2**24 else torch.float64

    def pruned_counts(self, keep: torch.Tensor) -> np.ndarray:
        pruned = torch.bincount(self.index, weights=(~keep).reshape(-1).to(self.exact_dtype), minlength=self.n)
        return pruned.round().to(torch.int64).numpy()


class WeightHistogram(widgets.VBox):
    """Layer dropdown (``layer``) and linear/log toggle (``scale``) above the histogram subplot.

    ``kept_counts`` / ``pruned_counts``: the int32 counts drawn now; ``threshold``: the magnitude cut drawn
    as ±threshold lines (None when not drawn).
    """

    def __init__(self, ctx: ViewContext, fig: go.FigureWidget, layer: str | None = None) -> None:
        self.ctx, self.fig = ctx, fig
        s = ctx.session
        self.layer = widgets.Dropdown(
            options=[(layer_label(t), t.name) for t in s.targets], value=layer or s.targets[0].name,
            description="Layer", layout=widgets.Layout(width="360px"), style={"description_width": "44px"},
        )
        self.scale = widgets.ToggleButtons(options=[("linear", "linear"), ("log", "log")], value="linear",
                                           tooltips=["counts on a linear axis", "counts on a log axis"],
                                           style={"button_width": "58px"})
        first = s.target(self.layer.value)
        self.part = widgets.Dropdown(options=part_options(first), value=-1, layout=widgets.Layout(
            width="170px", display=None if first.gates > 1 else "none"))
        self.part.add_class("pv-hist-part")
        self.kept_counts: np.ndarray | None = None
        self.pruned_counts: np.ndarray | None = None
        self.threshold: float | None = None
        self._bins: tuple[str, _Bins] | None = None
        self._drawn: tuple | None = None
        self._writer = TraceWriter()
        self.layer.observe(ctx.guard("show that layer's weights")(self._on_layer), "value")
        self.scale.observe(ctx.guard("switch the count scale")(self._on_control), "value")
        self.part.observe(ctx.guard("show that part of the layer")(self._on_control), "value")
        super().__init__([widgets.HBox([self.layer, self.part, self.scale])])
        self.add_class("pv-hist-controls")
        self.on_session(None)

    def _on_layer(self, change: dict) -> None:
        t = self.ctx.session.target(self.layer.value)
        self.part.options = part_options(t)  # resets the value to the first option: the whole tensor
        self.part.layout.display = None if t.gates > 1 else "none"
        self._on_control(change)

    def _on_control(self, _change: dict) -> None:
        with self.ctx.session.lock, self.ctx.lock:
            with self.fig.batch_update():
                self.on_session(None)
            self.ctx.snapshot()

    def bins(self, name: str, part: int = -1) -> _Bins:
        """The fixed bins of layer ``name`` (or of one of its gate blocks), computed once per selection."""
        if self._bins is None or self._bins[0] != (name, part):
            s = self.ctx.session
            self._bins = ((name, part), _Bins(part_of(s.original(name), s.target(name), part)))
        return self._bins[1]

    def on_session(self, event: SessionEvent | None) -> None:
        s = self.ctx.session
        name = self.layer.value
        plan = s.plan
        part = self.part.value if self.part.value is not None else -1
        key = (name, part, s.layer_state(name), plan.criterion, plan.scope, self.scale.value)
        if key == self._drawn:
            return
        t = s.target(name)
        bins = self.bins(name, part)
        pruned = bins.pruned_counts(part_of(s.mask(name), t, part))
        kept = bins.total - pruned
        self.kept_counts, self.pruned_counts = kept.astype(np.int32), pruned.astype(np.int32)
        w, tr = self._writer, self.fig.data
        with self.fig.batch_update():
            for trace, counts in ((tr[MainTraces.HIST_KEPT], self.kept_counts), (tr[MainTraces.HIST_PRUNED],
                                                                                  self.pruned_counts)):
                w.set(trace, "x", bins.centers)
                w.set(trace, "width", bins.width)
                w.set(trace, "y", counts)
            log = self.scale.value == "log"
            w.set(self.fig.layout.yaxis, "type", "log" if log else "linear")
            w.set(self.fig.layout.yaxis.title, "text", "number of weights (log)" if log else "number of weights")
            self.threshold = None
            if plan.criterion == "magnitude" and plan.scope != "structured":
                self.threshold = s.pruned_magnitude_threshold(name)
            shapes = self.fig.layout.shapes
            for i, sign in ((MainShapes.HIST_NEG, -1), (MainShapes.HIST_POS, 1)):
                w.set(shapes[i], "visible", self.threshold is not None)
                if self.threshold is not None:
                    w.set(shapes[i], "x0", sign * self.threshold)
                    w.set(shapes[i], "x1", sign * self.threshold)
            n_pruned = int(pruned.sum())
            cut = f" · |w| ≤ {self.threshold:.3g} pruned" if self.threshold is not None else ""
            which = "" if part < 0 else f" ({dict((v, k) for k, v in self.part.options)[part]})"
            title = (
                f"Weights of {esc(short_name(t))}{esc(which)}: "
                f'<span style="color:{COLORS["kept"]}">{100 * (1 - n_pruned / max(int(bins.total.sum()), 1)):.0f} % kept</span>, '
                f'<span style="color:#9ca3af">{fmt_count(n_pruned)} pruned</span>{cut}'
            )
            w.set(self.fig.layout.annotations[0], "text", title)
        self._drawn = key
