"""Shared pieces of the views: the context they render in, the error guard, colours and formatting.

Locking rule (it keeps the two threads that render from deadlocking): code that needs both locks takes
``session.lock`` *before* ``ViewContext.lock``. The live evaluator reports results while it holds the
session lock, so its listeners only take the render lock; the kernel thread takes both, in that order.
"""

from __future__ import annotations

import functools
import html
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..core import PrunevizError, PruningSession, Target, get_criterion

if TYPE_CHECKING:
    from ..core.live import LiveEvaluator
    from .errors import ErrorArea
    from .status import StatusIndicator

log = logging.getLogger("pruneviz.widgets")

F = TypeVar("F", bound=Callable[..., Any])

#: One palette for every view: kept = strong blue, pruned = grey, warnings = red.
COLORS = {
    "kept": "#2563eb",
    "pruned": "#c3c9d3",
    "warn": "#dc2626",
    "baseline": "#111827",
    "muted": "#6b7280",
    "good": "#15803d",
    "accent": "#f59e0b",
}
#: Colours of the (criterion, scope) series of the accuracy trail.
TRAIL_COLORS = ("#2563eb", "#f59e0b", "#16a34a", "#9333ea", "#db2777", "#0891b2")

SCOPE_LABELS = {"global": "global", "layer": "per layer", "structured": "structured"}
SCOPE_HELP = {
    "global": "One threshold across all layers: the least important weights anywhere go first, so each layer "
    "ends up with its own sparsity (see the bars). Moving a layer slider switches to per-layer scope.",
    "layer": "Every layer loses the same fraction of its weights; fine-tune single layers with the sliders below.",
    "structured": "Whole output channels (filters) are removed, the same fraction in every layer but the output "
    "layer; only this saves real compute on ordinary hardware.",
}

#: CSS shared by the views (injected once by the explorer, inside an HTML widget).
CSS = """
<style>
.pv-explorer { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }
.pv-title { font-size: 20px; font-weight: 600; color: #111827; }
.pv-subtitle { color: #6b7280; font-size: 13px; }
.pv-headline { font-size: 17px; line-height: 1.5; padding: 8px 12px; border-radius: 8px;
               background: #eff6ff; border: 1px solid #bfdbfe; color: #111827; }
.pv-headline b { color: #1e3a8a; }
.pv-headline .pv-neg { color: #dc2626; }
.pv-headline .pv-pos { color: #15803d; }
.pv-headline .pv-stale, .pv-accuracy .pv-stale { color: #9ca3af; }
.pv-error { color: #991b1b; background: #fef2f2; border: 1px solid #fecaca; border-radius: 6px;
            padding: 4px 10px; }
.pv-status { font-size: 13px; color: #374151; }
.pv-status .pv-dot { font-size: 15px; }
.pv-busy .pv-dot { color: #f59e0b; }
.pv-idle .pv-dot { color: #16a34a; }
.pv-section { font-weight: 600; color: #111827; margin-top: 6px; }
.pv-help { color: #6b7280; font-size: 12px; line-height: 1.35; }
.pv-collapse-warning { color: #b91c1c; font-weight: 600; }
.pv-accuracy .pv-big { font-size: 24px; font-weight: 700; color: #1e3a8a; line-height: 1.3; }
.pv-accuracy .pv-acc { font-size: 13px; color: #374151; }
.pv-accuracy .pv-stale .pv-big { color: #9ca3af; }
.pv-summary table { border-collapse: collapse; font-size: 13px; line-height: 1.45; }
.pv-summary td { padding: 0 10px 0 0; vertical-align: top; }
.pv-summary td.pv-key { color: #6b7280; white-space: nowrap; }
.pv-summary td.pv-num { font-variant-numeric: tabular-nums; }
.pv-gallery img { image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid #e5e7eb; }
.pv-slot-label { font-size: 12px; text-align: center; }
.pv-text-sample { font-size: 13px; font-style: italic; color: #1f2937; text-align: left; line-height: 1.35; }
.pv-row-sample { font-size: 12px; margin: 2px auto 0; } .pv-row-sample td { padding: 0 6px; }
.pv-global-slider .widget-readout::after, .pv-layer-slider .widget-readout::after { content: " %"; }
.pv-layer-slider { flex-wrap: wrap; height: auto !important; margin-bottom: 2px; }
.pv-layer-slider > .widget-label { width: 100% !important; max-width: none !important; text-align: left !important;
                                   font-size: 12px; line-height: 18px; height: 18px; }
</style>
"""


@dataclass
class ViewContext:
    """What every view renders from: the session, the live evaluator (None without data), the render lock,
    the error area and the status indicator."""

    session: PruningSession
    errors: ErrorArea
    status: StatusIndicator
    live: LiveEvaluator | None = None
    class_names: Sequence[str] = ()
    lock: threading.RLock = field(default_factory=threading.RLock)
    figures: list[Any] = field(default_factory=list)
    #: how samples are shown: ``show`` ("image", "spectrogram", "text", "table"), ``sample_text`` (one string per
    #: sample of the data as given, or a function of a sample's input), ``feature_names``
    hints: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> None:
        """Keep every FigureWidget's full synced state current (see :func:`figures.snapshot`)."""
        from .figures import snapshot

        for fig in self.figures:
            snapshot(fig)

    def guard(self, where: str, source: str = "action", on_error: Callable[[], Any] | None = None) -> Callable[[F], F]:
        """Decorator: run the callback; on any exception log it and show it in plain words (no traceback).

        ``on_error`` runs after the message is shown (e.g. to re-sync a control with the session)."""

        def deco(fn: F) -> F:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - every callback error is shown, never raised
                    log.warning("pruneviz: error while %s", where, exc_info=True)
                    self.errors.show(where, e, source=source)
                    if on_error is not None:
                        try:
                            on_error()
                        except Exception:  # noqa: BLE001 - best effort
                            log.exception("pruneviz: recovering after an error failed")
                    return None

            return wrapper  # type: ignore[return-value]

        return deco

    def call(self, where: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` under :meth:`guard`."""
        return self.guard(where)(fn)(*args, **kwargs)


def describe_error(exc: BaseException | str) -> str:
    """An exception as one plain sentence: pruneviz errors carry their own advice; others get their type."""
    if isinstance(exc, str):
        return exc
    if isinstance(exc, PrunevizError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def short_name(target: Target) -> str:
    """``features.0.weight`` -> ``features.0``; RNN tensors keep their parameter name."""
    if target.param_name == "weight" and target.module_name:
        return target.module_name
    return target.name


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape)


def fmt_count(n: float) -> str:
    """1234 -> '1.2 k', 11_689_512 -> '11.7 M'."""
    n = float(n)
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def fmt_bytes(n: float) -> str:
    n = float(n)
    for div, unit in ((2**30, " GB"), (2**20, " MB"), (2**10, " KB")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f} B"


def fmt_x(ratio: float) -> str:
    """A ratio as '3.1x' (one decimal below 10, none above)."""
    if not math.isfinite(ratio) or ratio > 1000:
        return ">1000x"  # a collapsed layer: (almost) nothing left to compute
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


def get_criterion_label(name: str) -> str:
    """The display label of criterion ``name`` (the name itself for a custom criterion)."""
    try:
        return get_criterion(name).label
    except Exception:  # noqa: BLE001 - a custom criterion known only to the session
        return name


def layer_label(target: Target) -> str:
    return f"{short_name(target)} · {shape_text(target.shape)} · {fmt_count(target.numel)}"


class TraceWriter:
    """Assign plotly trace/layout properties only when they change, so unchanged data is never resent."""

    def __init__(self) -> None:
        self._sent: dict[Any, Any] = {}

    @staticmethod
    def _key(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return (value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, list | tuple):
            return tuple(TraceWriter._key(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, TraceWriter._key(v)) for k, v in value.items()))
        return value

    def set(self, obj: Any, prop: str, value: Any, key: Any = None) -> bool:
        """``obj[prop] = value`` unless the same value was sent last time; returns whether it was sent."""
        k = (id(obj), prop) if key is None else key
        sig = self._key(value)
        if self._sent.get(k, _MISSING) == sig:
            return False
        obj[prop] = value
        self._sent[k] = sig
        return True

    def forget(self) -> None:
        self._sent.clear()


_MISSING = object()


def _reason_kind(reason: str) -> str:
    """The short kind of an exclusion reason: 'bias', 'BatchNorm2d scale/shift', 'tied', 'embedding', ..."""
    head = reason.split(":")[0]
    for start, kind in (("the same tensor", "tied copy"), ("a 1-D", "other 1-D parameter"),
                        ("a learned token", "token/position table"), ("a parameter of", "unsupported-module weight"),
                        ("left out", "left out by include/exclude")):
        if head.startswith(start):
            return kind
    return head.replace(" scale/shift", " scales/shifts")


def excluded_summary(excluded: dict[str, str]) -> str:
    """'21 biases · 20 BatchNorm2d scales/shifts · 1 embedding (opt in: embeddings=True)' for the explorer."""
    counts: dict[str, int] = {}
    for reason in excluded.values():
        kind = _reason_kind(reason)
        counts[kind] = counts.get(kind, 0) + 1
    parts = []
    for kind, n in counts.items():
        plural = {"bias": "biases", "tied copy": "tied copies", "token/position table": "token/position tables"}
        word = plural.get(kind, kind if kind.endswith(("s", "e")) and " " in kind else kind + "s") if n > 1 else kind
        extra = " (opt in: embeddings=True)" if kind == "embedding" else ""
        parts.append(f"{n} {word}{extra}")
    return " · ".join(parts)


def excluded_detail(excluded: dict[str, str], limit: int = 40) -> str:
    """One 'name: reason' line per excluded parameter (a tooltip)."""
    lines = [f"{n}: {r}" for n, r in list(excluded.items())[:limit]]
    if len(excluded) > limit:
        lines.append(f"... and {len(excluded) - limit} more (session.excluded)")
    return "\n".join(lines)
