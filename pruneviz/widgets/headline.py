"""Headline: one line a manager reads in five seconds.

"Accuracy 97.2 % (-0.4 points vs 98.6 %) · 42 % of weights removed · model 3.1x smaller · FLOPs 1.8x fewer"
"""

from __future__ import annotations

import re
from collections.abc import Callable

import ipywidgets as widgets

from ..core import SessionEvent
from ..core.evaluate import EvalResult
from .base import ViewContext, fmt_x
from .summary import FlopsNow

_TAGS = re.compile(r"<[^>]+>")


class Headline(widgets.HTML):
    """The headline strip (class ``pv-headline``); ``text`` is its plain-text form."""

    def __init__(self, ctx: ViewContext, flops: Callable[[], FlopsNow | None]) -> None:
        super().__init__()
        self.add_class("pv-headline")
        self.ctx = ctx
        self._flops = flops
        self.text = ""
        self.render()

    def _result(self) -> tuple[EvalResult | None, bool]:
        """The latest result and whether it belongs to an older plan (stale)."""
        live = self.ctx.live
        if live is None or live.latest is None:
            return None, False
        return live.latest, live.latest.generation != self.ctx.session.generation

    def render(self) -> None:
        s = self.ctx.session
        parts = []
        r, stale = self._result()
        live = self.ctx.live
        task = live.evaluator.task if live is not None else None
        if (r is not None and task is not None and not task.percent and r.value is not None
                and live.baseline.value is not None):
            base = live.baseline.value
            approx = "" if r.final else "≈"
            better = (r.value - base) * (1 if task.higher_is_better else -1)
            cls = "" if abs(r.value - base) < 5e-4 else ("pv-neg" if better < 0 else "pv-pos")
            rel = (f"same as unpruned {task.fmt(base)}" if not cls
                   else f"{task.fmt_delta(r.value, base)} vs {task.fmt(base)}")
            label = task.metric_label if task.name != "custom" else r.metric
            html_part = f"{label} <b>{approx}{task.fmt(r.value)}</b> (<span class='{cls}'>{rel}</span>)"
            parts.append(f"<span class='pv-stale'>{html_part}</span>" if stale else html_part)
        elif r is not None and r.accuracy is not None and live is not None and live.baseline.accuracy is not None:
            acc, base = 100 * r.accuracy, 100 * live.baseline.accuracy
            delta = acc - base
            approx = "" if r.final else "≈"
            if abs(delta) < 0.05:
                rel = f"same as unpruned {base:.1f} %"
                cls = ""
            else:
                rel = f"{delta:+.1f} points vs {base:.1f} %"
                cls = "pv-neg" if delta < 0 else "pv-pos"
            acc_html = f"Accuracy <b>{approx}{acc:.1f} %</b> (<span class='{cls}'>{rel}</span>)"
            if stale:
                acc_html = f"<span class='pv-stale'>{acc_html}</span>"
            parts.append(acc_html)
        elif r is not None and r.loss is not None:
            parts.append(f"Loss <b>{r.loss:.3f}</b> (unpruned {live.baseline.loss:.3f})" if live else "")
        summ = s.summary()
        parts.append(f"<b>{100 * summ.sparsity:.0f} %</b> of weights removed")
        parts.append(f"model <b>{fmt_x(summ.compression)}</b> smaller" if summ.compression > 1.005
                     else "model full size")
        f = self._flops()
        if f is not None:
            if f.structured is not None:
                parts.append(f"FLOPs <b>{fmt_x(f.reduction)}</b> fewer (channels removed)")
            elif f.pending:
                parts.append("FLOPs: counting…")
            elif f.dense / max(f.sparse, 1) > 1.005:
                parts.append(f"FLOPs <b>{fmt_x(f.dense / max(f.sparse, 1))}</b> fewer (if zeros are skipped)")
            else:
                parts.append("FLOPs unchanged")
        html = " · ".join(p for p in parts if p)
        self.value = html
        self.text = _TAGS.sub("", html)

    def on_session(self, event: SessionEvent | None) -> None:
        self.render()
