"""Shared helpers of the lessons: palette, data, accuracy sweeps, guarded callbacks, the "finding" card.

Conventions every lesson follows (so a class sees the same picture in every notebook):

* kept weights/filters are strong blue (:data:`KEPT`), pruned ones light grey (:data:`PRUNED`), a
  warning (layer collapse, a big accuracy drop) is red (:data:`DANGER`);
* accuracy is the test accuracy on the 360 held-out digits, in percent;
* every widget callback runs through :func:`guarded`: an error is shown in the lesson's error area and
  never raised into the front end (Voila would hide it);
* plotly figures are ``FigureWidget`` s created once and updated in place (each one ships ~5 MB of JS).
"""

from __future__ import annotations

import copy
import html
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.finetune import torch_threads
from pruneviz.data import digits_tensors, load_demo_model

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- palette
KEPT = "#1f77b4"  #: kept weights / filters (strong blue)
PRUNED = "#c7c7c7"  #: pruned weights / filters (light grey)
DANGER = "#d62728"  #: warnings: layer collapse, accuracy lost
GOOD = "#2ca02c"  #: recovered / fine-tuned
INK = "#333333"  #: reference lines (baseline accuracy)

CRITERION_COLORS = {
    "magnitude": KEPT,
    "random": "#7f7f7f",
    "saliency": "#ff7f0e",
    "taylor": "#2ca02c",
    "l1_filter": KEPT,
    "l2_filter": "#17becf",
    "bn_scale": "#9467bd",
}
CRITERION_LABELS = {
    "magnitude": "magnitude |w|",
    "random": "random",
    "saliency": "saliency |w·grad|",
    "taylor": "Taylor (w·grad)²",
    "l1_filter": "L1 norm of filter",
    "l2_filter": "L2 norm of filter",
    "bn_scale": "BN scale |γ|",
}
SCOPE_COLORS = {"layer": "#ff7f0e", "global": "#9467bd"}
SCOPE_LABELS = {"layer": "uniform (same sparsity per layer)", "global": "global (one threshold)"}
MODEL_LABELS = {"mlp": "MLP 64-300-100-10", "cnn": "Small CNN (3 conv + BatchNorm)"}
#: A weight-diverging colour scale that keeps blue free for "kept": orange = negative, purple = positive.
WEIGHT_SCALE = "PuOr"

FONT = {"size": 14}
#: Accuracy points of "no loss": a drop of more than this (1 point = 0.01) counts as losing accuracy.
ONE_POINT = 0.01


def figure_layout(**kw: Any) -> dict[str, Any]:
    """Common plotly layout for projected lessons (white, large font, tight margins)."""
    base: dict[str, Any] = {
        "template": "plotly_white",
        "font": FONT,
        "margin": {"l": 60, "r": 20, "t": 70, "b": 120},
        # below the x-axis titles: above the plot it would collide with the subplot titles
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0},
    }
    base.update(kw)
    return base


# -------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Digits:
    """The embedded digits data as (x, y) tensors per split."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


@lru_cache(maxsize=1)
def digits() -> Digits:
    """The fixed 60/20/20 split of scikit-learn's digits (1,078 / 359 / 360 images)."""
    return Digits(digits_tensors("train"), digits_tensors("val"), digits_tensors("test"))


def calib_batches(n_batches: int = 4, batch_size: int = 128) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few training batches: what the gradient-based criteria (saliency, Taylor) look at."""
    x, y = digits().train
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n_batches * batch_size, batch_size)]


def demo_model(name: str) -> nn.Module:
    """A fresh copy of the pretrained demo model ``name`` ("mlp" or "cnn"), in eval mode."""
    return load_demo_model(name)


def evaluator(model: nn.Module, split: str = "test") -> Evaluator:
    """An evaluator on one split of the digits (all its images)."""
    return Evaluator(model, getattr(digits(), split))


def accuracy(ev: Evaluator, model: nn.Module) -> float:
    """Accuracy (0..1) of ``model`` on the evaluator's data."""
    acc = ev.evaluate(model).accuracy
    if acc is None:  # pragma: no cover - the digits task is always classification
        raise RuntimeError("the evaluator gave no accuracy")
    return float(acc)


def sparsity_levels(stop: float = 0.95, step: float = 0.025, extra: Sequence[float] = (0.97, 0.99)) -> np.ndarray:
    """The grid of sparsities a curve is measured on: 0, step, ..., stop, then ``extra``."""
    grid = np.arange(0.0, stop + step / 2, step)
    return np.unique(np.round(np.concatenate([grid, np.asarray(extra, dtype=float)]), 4))


Progress = Callable[[int, int], None]


def accuracy_sweep(
    session: PruningSession,
    ev: Evaluator,
    levels: Iterable[float],
    progress: Callable[[], None] | None = None,
) -> np.ndarray:
    """Accuracy after ``session.set_global_sparsity(v)`` for every ``v``; the session is reset afterwards.

    ``progress()`` is called once per level. Every point is recomputed from the original weights.
    """
    accs = []
    try:
        for v in levels:
            session.set_global_sparsity(float(v))
            accs.append(accuracy(ev, session.model))
            if progress is not None:
                progress()
    finally:
        session.reset()
    return np.asarray(accs, dtype=float)


def last_within(levels: Sequence[float], accs: Sequence[float], baseline: float, drop: float = ONE_POINT) -> float:
    """The largest sparsity reached before accuracy first falls more than ``drop`` below ``baseline``.

    Walks the curve from the dense end and stops at the first point that loses more than ``drop``:
    a lucky point after the first big loss does not count.
    """
    best = 0.0
    for v, a in zip(levels, accs, strict=True):
        if a < baseline - drop - 1e-12:
            break
        best = float(v)
    return best


def compression(sparsity: float) -> float:
    """Compression factor of a sparsity: 0.9 -> 10x."""
    return 1.0 / max(1e-12, 1.0 - sparsity)


def pct(x: float, digits_: int = 1) -> str:
    """0.9861 -> '98.6 %'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.{digits_}f} %"


def points(x: float) -> str:
    """An accuracy difference in percentage points, signed: -0.0278 -> '-2.8 pts'."""
    return f"{100 * x:+.1f} pts"


def single_threaded(fn: Callable) -> Callable:
    """Run ``fn`` with one torch thread: these models are tiny, and on a 2-core machine with anything else
    running, a 2-thread OpenMP team is several times slower than one thread (measured: 25 vs 95-240 ms
    per evaluation of the CNN)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(1):
            return fn(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------- widgets plumbing
def snapshot(fig: Any) -> None:
    """Make a FigureWidget's synced full state match its current data, without sending anything.

    ``batch_update`` edits travel as transient messages; a front end that connects later (Voila renders
    the page only after the kernel ran the whole notebook; a reloaded JupyterLab page) asks for the full
    state instead and would get the figure as it was built, empty. (The same technique as the explorer's
    ``pruneviz.widgets.figures.snapshot``.)
    """
    fig._trait_values["_widget_data"] = copy.deepcopy(fig._data)
    fig._trait_values["_widget_layout"] = copy.deepcopy(fig._layout_obj._props)


@contextmanager
def updating(fig: Any) -> Iterator[Any]:
    """``with updating(fig):`` = ``fig.batch_update()`` (one message), then :func:`snapshot`."""
    with fig.batch_update():
        yield fig
    snapshot(fig)


def error_area():
    """An HTML area for errors raised in callbacks (hidden while empty)."""
    import ipywidgets as W

    area = W.HTML(layout=W.Layout(display="none"))
    area.add_class("pv-lesson-error")
    return area


def show_error(area, exc: BaseException, where: str = "") -> None:
    """Put ``exc`` into ``area`` (made visible) as a short red box."""
    text = f"{type(exc).__name__}: {exc}"
    prefix = f"{html.escape(where)}: " if where else ""
    area.value = (
        "<div style='color:#8b0000;background:#fdecea;border:1px solid #d62728;border-radius:4px;"
        f"padding:6px 10px'><b>Something went wrong</b> — {prefix}{html.escape(text)}</div>"
    )
    area.layout.display = ""


def clear_error(area) -> None:
    area.value = ""
    area.layout.display = "none"


def guarded(area_attr: str = "error") -> Callable:
    """Decorator for widget callbacks (methods): exceptions go to ``self.<area_attr>``, never to the caller.

    The callback runs with one torch thread (see :func:`single_threaded`)."""

    def deco(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(self, *args: Any, **kwargs: Any) -> Any:
            area = getattr(self, area_attr)
            try:
                with torch_threads(1):
                    out = fn(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - shown in the lesson, never raised into the front end
                log.exception("pruneviz lesson: %s failed", fn.__name__)
                show_error(area, e, fn.__name__.strip("_").replace("_", " "))
                return None
            clear_error(area)
            return out

        return wrapper

    return deco


def progress_bar(description: str = "Computing"):
    """An app-owned progress bar (``IntProgress``) to place in a lesson's layout."""
    import ipywidgets as W

    bar = W.IntProgress(
        value=0, min=0, max=1, description=description, bar_style="info",
        style={"description_width": "initial"}, layout=W.Layout(width="420px"),
    )
    bar.add_class("pv-lesson-progress")
    return bar


class Ticker:
    """Counts steps on an ``IntProgress`` (or nothing): ``tick()`` after each step."""

    def __init__(self, bar: Any | None, total: int, description: str | None = None) -> None:
        self.bar = bar
        self.done = 0
        if bar is not None:
            bar.max = max(1, total)
            bar.value = 0
            bar.bar_style = "info"
            if description:
                bar.description = description

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.value = min(self.bar.max, self.done)

    def finish(self, description: str | None = None) -> None:
        if self.bar is not None:
            self.bar.value = self.bar.max
            self.bar.bar_style = "success"
            if description:
                self.bar.description = description


def stats_html(rows: Sequence[tuple[str, str]], title: str | None = None) -> str:
    """A small two-column table of (label, value) rows."""
    head = f"<div style='font-weight:600;margin-bottom:4px'>{html.escape(title)}</div>" if title else ""
    body = "".join(
        f"<tr><td style='padding:2px 12px 2px 0;color:#555'>{html.escape(k)}</td>"
        f"<td style='padding:2px 0;font-variant-numeric:tabular-nums'>{v}</td></tr>"
        for k, v in rows
    )
    return f"<div class='pv-lesson-stats' style='font-size:15px'>{head}<table>{body}</table></div>"


def display_app(app: Any, run: Callable[[], Any] | None = None) -> Any:
    """Display ``app`` and then run its computation (so its progress bar is seen moving); returns ``app``."""
    from IPython.display import display

    display(app)
    if run is not None:
        run()
    return app


# --------------------------------------------------------------------------------------------- findings
@dataclass(frozen=True)
class Finding:
    """A result from the literature next to its miniature reproduction, computed when the notebook runs.

    ``paper``: what the paper reports (fixed text, with its setting); ``ours``: the same quantity measured
    just now on the digits; ``verdict``: one sentence comparing them (computed, so it can say "not
    reproduced" too); ``numbers``: the raw values, for tests and for anyone who wants to plot them.
    """

    title: str
    source: str
    paper: str
    ours: str
    verdict: str
    numbers: dict[str, float] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        cell = ("padding:8px 12px;vertical-align:top;text-align:left;border-top:1px solid #ddd;font-size:15px;"
                "line-height:1.45;background:transparent")
        return (
            "<div class='pv-finding' style='border-left:5px solid #1f77b4;background:#f5f9fd;"
            "padding:10px 14px;margin:6px 0;font-size:15px;max-width:980px'>"
            f"<div style='font-weight:700;font-size:16px;margin-bottom:4px'>From the literature: "
            f"{html.escape(self.title)}</div>"
            f"<div style='color:#555;margin-bottom:8px'>Source: {html.escape(self.source)}</div>"
            "<table style='border-collapse:collapse;width:100%'>"
            f"<tr><th style='text-align:left;{cell};width:50%'>The paper</th>"
            f"<th style='text-align:left;{cell}'>Here, on the digits (computed just now)</th></tr>"
            f"<tr><td style='{cell}'>{self.paper}</td><td style='{cell}'>{self.ours}</td></tr></table>"
            f"<div style='margin-top:8px'><b>Verdict:</b> {self.verdict}</div></div>"
        )

    def __str__(self) -> str:
        import re

        def plain(s: str) -> str:
            return html.unescape(re.sub(r"<[^>]+>", "", s.replace("<br>", "\n")))

        return (
            f"From the literature: {self.title}\nSource: {self.source}\nThe paper: {plain(self.paper)}\n"
            f"Here: {plain(self.ours)}\nVerdict: {plain(self.verdict)}"
        )

    def __repr__(self) -> str:
        return str(self)
