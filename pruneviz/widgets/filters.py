"""FilterImportance: every output filter's importance under the current criterion (sorted bars, pruned ones
grey), and beside it the first convolution's kernels (pruned ones dimmed) or a downsampled keep-mask.

A filter counts as pruned when all of its weights are pruned. Heatmaps go to the browser as small lists of
integers (kept % in 5 % steps), never the raw weights.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F

from ..core import SessionEvent, Target
from ..core.criteria import channel_view
from .base import COLORS, TraceWriter, ViewContext, esc, get_criterion_label, layer_label, short_name
from .figures import FilterTraces, make_filter_figure

MAX_ROWS, MAX_COLS = 32, 48
MAX_OVERLAY_CELLS = 1024
#: kernels drawn as pictures only while their grid stays this small (ResNet's 64 7x7: 4,096 cells); a ViT's
#: patch embedding (768 16x16 kernels: 226 k cells, seconds of plotly validation) shows its keep-mask instead
MAX_KERNEL_CELLS = 40_000


UNIT_WORDS = {"channel": "filters", "output": "outputs", "hidden unit": "hidden units", "head": "heads",
              "dimension": "dimensions", "projection unit": "projection units", "row": "rows"}


def unit_word(t: Target) -> str:
    """What one structured unit of ``t`` is called, plural: filters, hidden units, heads, ..."""
    return UNIT_WORDS.get(t.unit, t.unit + "s")


def _kernel_cells(shape: tuple[int, ...]) -> int:
    """Cells of the grid that draws a conv's (O, I, kh, kw) kernels side by side, one-cell gaps included."""
    o, _, kh, kw = shape
    rows, cols = _grid(o)
    return rows * (kh + 1) * cols * (kw + 1)


def _first_conv(targets: list[Target]) -> str | None:
    """The first Conv2d whose kernels are drawn as pictures (small enough to draw; else None)."""
    for t in targets:
        if t.kind == "Conv2d" and len(t.shape) == 4:
            return t.name if _kernel_cells(t.shape) <= MAX_KERNEL_CELLS else None
    return None


def _grid(o: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(o))
    return math.ceil(o / cols), cols


def _tile(blocks: np.ndarray, fill: object = None) -> list[list]:
    """(O, kh, kw) blocks as one grid (list of rows) with a one-cell gap (``fill``) between blocks."""
    o, kh, kw = blocks.shape
    rows, cols = _grid(o)
    out = [[fill] * (cols * (kw + 1) - 1) for _ in range(rows * (kh + 1) - 1)]
    vals = blocks.tolist()
    for k in range(o):
        r0, c0 = (k // cols) * (kh + 1), (k % cols) * (kw + 1)
        for i in range(kh):
            out[r0 + i][c0 : c0 + kw] = vals[k][i]
    return out


class FilterImportance(widgets.VBox):
    """Layer dropdown (``layer``, class ``pv-filters`` on this box), a note (``note``) and the filter figure
    (``figure``). ``pruned_channels``: bool per output channel drawn now; ``scores``: the scores drawn."""

    def __init__(self, ctx: ViewContext, layer: str | None = None) -> None:
        self.ctx = ctx
        s = ctx.session
        self.first_conv = _first_conv(s.targets)
        self.figure = make_filter_figure()
        self.layer = widgets.Dropdown(
            options=[(layer_label(t), t.name) for t in s.targets], value=layer or self.first_conv or s.names[0],
            description="Layer", layout=widgets.Layout(width="420px"), style={"description_width": "44px"},
        )
        self.note = widgets.HTML()
        self.note.add_class("pv-help")
        self.scores: np.ndarray | None = None
        self.pruned_channels: np.ndarray | None = None
        self._writer = TraceWriter()
        self._drawn: tuple | None = None
        self._panel: tuple | None = None
        self.layer.observe(ctx.guard("show that layer's filters")(self._on_layer), "value")
        super().__init__([
            widgets.HTML('<div class="pv-section">Filter importance</div>'),
            widgets.HBox([self.layer, self.note]), self.figure,
        ])
        self.add_class("pv-filters")
        self.on_session(None)

    def _on_layer(self, _change: dict) -> None:
        with self.ctx.session.lock, self.ctx.lock:
            self.on_session(None)
            self.ctx.snapshot()

    def on_session(self, event: SessionEvent | None) -> None:
        s = self.ctx.session
        name = self.layer.value
        plan = s.plan
        key = (name, s.layer_state(name), plan.criterion, plan.scope)
        if key == self._drawn:
            return
        t = s.target(name)
        keep = s.mask(name)
        pruned = ~channel_view(keep, t).any(dim=1)
        self.pruned_channels = pruned.numpy().copy()
        scores = s.scores(name, structured=True)
        fig, w = self.figure, self._writer
        tr = fig.data
        with fig.batch_update():
            if scores is None:
                self.scores = None
                for i in (FilterTraces.IMP_KEPT, FilterTraces.IMP_PRUNED):
                    w.set(tr[i], "x", np.zeros(0, np.float32))
                    w.set(tr[i], "y", np.zeros(0, np.float32))
                self.note.value = (f'<span style="color:{COLORS["warn"]}">{esc(get_criterion_label(plan.criterion))} '
                                   "cannot score this layer (no BatchNorm follows it): it stays dense.</span>")
            else:
                sc = scores.detach().float().numpy()
                self.scores = sc
                order = np.argsort(-sc, kind="stable")
                ys = sc[order].astype(np.float32)
                pr = self.pruned_channels[order]
                x = np.arange(len(sc), dtype=np.float32)
                cd = order.astype(np.int32)
                for i, ok in ((FilterTraces.IMP_KEPT, ~pr), (FilterTraces.IMP_PRUNED, pr)):
                    w.set(tr[i], "x", x)
                    w.set(tr[i], "customdata", cd)
                    w.set(tr[i], "y", np.where(ok, ys, np.float32(np.nan)).astype(np.float32))
                n_pr = int(pr.sum())
                self.note.value = (f"{esc(get_criterion_label(plan.criterion))}: <b>{n_pr} of {len(sc)}</b> "
                                   f"{unit_word(t)} fully pruned (grey)")
            w.set(fig.layout.annotations[0], "text", f"Importance of the {unit_word(t)} of {esc(short_name(t))}")
            w.set(fig.layout.xaxis.title, "text", f"{unit_word(t)}, most important first")
            if name == self.first_conv:
                self._draw_kernels(t, keep)
            else:
                self._draw_mask(t, keep)
        self._drawn = key

    def _draw_kernels(self, t: Target, keep: torch.Tensor) -> None:
        fig, w = self.figure, self._writer
        heat, over = fig.data[FilterTraces.HEAT], fig.data[FilterTraces.OVERLAY]
        o, _, kh, kw = t.shape
        rows, cols = _grid(o)
        # one dimming cell per weight when the grid is small, else one per kernel (bytes stay small)
        per_pixel = _kernel_cells(t.shape) <= MAX_OVERLAY_CELLS
        if self._panel != ("kernels", t.name):
            k = self.ctx.session.original(t.name).detach().float().mean(dim=1)  # (O, kh, kw), RGB averaged
            k = k / max(float(k.abs().max()), 1e-12)
            w.set(heat, "z", _tile(np.round(k.numpy(), 2)))
            w.set(heat, "colorscale", "RdBu")
            w.set(heat, "zmid", 0)
            w.set(heat, "zmin", -1)
            w.set(heat, "zmax", 1)
            w.set(heat, "showscale", False)
            w.set(heat, "hoverinfo", "skip")
            w.set(over, "visible", True)
            if per_pixel:
                w.set(over, "x0", 0)
                w.set(over, "dx", 1)
                w.set(over, "y0", 0)
                w.set(over, "dy", 1)
            else:  # a cell per kernel, centred on it, covering the kernel and its gap
                w.set(over, "x0", kw / 2)
                w.set(over, "dx", kw + 1)
                w.set(over, "y0", kh / 2)
                w.set(over, "dy", kh + 1)
            w.set(fig.layout.yaxis2, "scaleanchor", "x2")
            w.set(fig.layout.annotations[1], "text",
                  f"Kernels of {esc(short_name(t))} (pruned dimmed)")
            self._panel = ("kernels", t.name)
        pruned = (~keep).float()
        if per_pixel:
            levels = torch.round(pruned.mean(dim=1) * 4).to(torch.int8).numpy()  # share of input channels pruned
            z = _tile(levels, fill=0)
        else:
            per_kernel = torch.round(pruned.reshape(o, -1).mean(dim=1) * 4).to(torch.int8).tolist()
            per_kernel += [0] * (rows * cols - o)
            z = [per_kernel[r * cols : (r + 1) * cols] for r in range(rows)]
        w.set(over, "z", z)

    def _draw_mask(self, t: Target, keep: torch.Tensor) -> None:
        fig, w = self.figure, self._writer
        heat, over = fig.data[FilterTraces.HEAT], fig.data[FilterTraces.OVERLAY]
        m = channel_view(keep, t).float()
        o, fan_in = m.shape
        rows, cols = min(o, MAX_ROWS), min(fan_in, MAX_COLS)
        kept = F.adaptive_avg_pool2d(m[None, None], (rows, cols))[0, 0]
        z = (torch.round(kept * 20) * 5).to(torch.int16).numpy().tolist()  # kept %, 5 % steps
        if self._panel != ("mask", t.name):
            w.set(heat, "colorscale", [[0, COLORS["pruned"]], [0.5, "#93c5fd"], [1, COLORS["kept"]]])
            w.set(heat, "zmid", None)
            w.set(heat, "zmin", 0)
            w.set(heat, "zmax", 100)
            w.set(heat, "showscale", True)
            w.set(heat, "colorbar", {"title": {"text": "kept %"}, "thickness": 10, "len": 0.8})
            w.set(heat, "hoverinfo", "z")
            w.set(over, "visible", False)
            w.set(fig.layout.yaxis2, "scaleanchor", None)
            block = f"{math.ceil(o / rows)} {unit_word(t)} × {math.ceil(fan_in / cols)} inputs per cell"
            w.set(fig.layout.annotations[1], "text",
                  f"Keep-mask of {esc(short_name(t))} <span style='font-size:11px;color:#6b7280'>({block})</span>")
            self._panel = ("mask", t.name)
        w.set(heat, "z", z)
