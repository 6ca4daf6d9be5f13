"""SummaryView: parameters, compression, model bytes and FLOPs (dense, zeros skipped, channels removed).

Dense and sparse FLOPs are instant. FLOPs after physically removing pruned channels take 0.3-1.5 s, so
they are counted only in structured scope, in a background thread, a moment after the last change (a newer
change makes a running count stale; its answer is dropped).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import ipywidgets as widgets
import torch

from ..core import SessionEvent
from ..core.flops import FlopsCounter, slim_copy
from ..core.stats import count_flops
from .base import ViewContext, describe_error, esc, fmt_bytes, fmt_count, fmt_x

log = logging.getLogger("pruneviz.widgets")

DEBOUNCE_S = 0.2


@dataclass(frozen=True)
class FlopsNow:
    """FLOPs of the current plan: ``structured`` is None until counted (or when not in structured scope)."""

    dense: int
    sparse: int
    structured: int | None
    pending: bool = False
    coupled: tuple[str, ...] = ()
    note: str = ""

    @property
    def reduction(self) -> float:
        """Dense / best available count: after channel removal when known, else with zeros skipped."""
        best = self.structured if self.structured is not None else self.sparse
        return self.dense / max(best, 1)


class SummaryView(widgets.HTML):
    """The numbers table (class ``pv-summary``). ``flops_now()`` gives the FLOPs of the current plan;
    ``on_update`` is called (locks held) when a background FLOPs count lands."""

    def __init__(self, ctx: ViewContext, example_input: torch.Tensor | None,
                 on_update: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.add_class("pv-summary")
        self.ctx = ctx
        self.on_update = on_update
        self.example_input = example_input
        self.counter: FlopsCounter | None = None
        self.flops_error = ""
        if example_input is not None:
            try:
                self.counter = FlopsCounter(ctx.session, example_input)
            except Exception as e:  # noqa: BLE001 - FLOPs are optional: say why they are missing
                log.warning("pruneviz: FLOPs unavailable", exc_info=True)
                self.flops_error = describe_error(e)
        else:
            self.flops_error = "no example input"
        self._structured: tuple[int, int, tuple[str, ...]] | None = None  # (generation, flops, coupled)
        self._structured_error: tuple[int, str] | None = None
        self._cond = threading.Condition()
        self._wanted = -1
        self._closed = False
        self._thread: threading.Thread | None = None
        self.on_session(None)

    # ----------------------------------------------------------------- numbers
    def _needs_structured(self) -> bool:
        s = self.ctx.session
        return s.plan.scope == "structured" and any(s.channel_mask(n) is not None for n in s.names)

    def flops_now(self) -> FlopsNow | None:
        """FLOPs of the session's current plan (None when they cannot be counted)."""
        if self.counter is None:
            return None
        s = self.ctx.session
        dense, sparse = self.counter.dense, self.counter.sparse()
        if not self._needs_structured():
            return FlopsNow(dense, sparse, None)
        if self._structured is not None and self._structured[0] == s.generation:
            return FlopsNow(dense, sparse, self._structured[1], coupled=self._structured[2])
        if self._structured_error is not None and self._structured_error[0] == s.generation:
            return FlopsNow(dense, sparse, None, note=self._structured_error[1])
        return FlopsNow(dense, sparse, None, pending=True)

    def render(self) -> None:
        s = self.ctx.session
        summ = s.summary()
        rows = [
            ("Parameters", f"{fmt_count(summ.total_params)} total · {fmt_count(summ.nonzero_params)} nonzero"),
            ("Weights removed", f"{100 * summ.sparsity:.0f} % ({fmt_count(summ.pruned_params)} of "
                                f"{fmt_count(summ.prunable_params)} prunable)"),
            ("Compression", f"{fmt_x(summ.compression)} (parameters / nonzero)"),
            ("Model size", f"{fmt_bytes(summ.dense_bytes)} dense · "
                           f'<span title="nonzero values + a 1-bit mask">{fmt_bytes(summ.sparse_bytes)} sparse</span>'),
        ]
        if s.plan.scope == "structured":
            chans = [int((~m).sum()) for n in s.names if (m := s.channel_mask(n)) is not None]
            total = sum(t.channels for t in s.targets)
            rows.append(("Channels removed", f"{sum(chans)} of {total} output channels"))
        f = self.flops_now()
        if f is None:
            rows.append(("FLOPs", f'<span class="pv-help">not counted ({esc(self.flops_error)})</span>'))
        else:
            rows.append(("FLOPs / sample", f"{fmt_count(f.dense)} dense"))
            rows.append(("zeros skipped", f'<span title="only sparse kernels can skip zeros">{fmt_count(f.sparse)} '
                                          f"({fmt_x(f.dense / max(f.sparse, 1))} fewer)</span>"))
            if s.plan.scope != "structured":
                after = '<span class="pv-help">structured scope only</span>'
            elif f.structured is not None:
                after = (f'<span title="real speed-up on ordinary hardware">{fmt_count(f.structured)} '
                         f"({fmt_x(f.dense / max(f.structured, 1))} fewer)</span>")
                if f.coupled:
                    after += (f'<br><span class="pv-help">{len(f.coupled)} layer(s) kept whole: their channels '
                              "are tied by residual connections</span>")
            elif f.pending:
                after = '<span class="pv-help">counting…</span>'
            elif f.note:
                after = f'<span class="pv-help">not available: {esc(f.note)}</span>'
            else:
                after = f"{fmt_count(f.dense)} (nothing removed)"
            rows.append(("channels removed", after))
        body = "".join(f"<tr><td class='pv-key'>{esc(k)}</td><td class='pv-num'>{v}</td></tr>" for k, v in rows)
        self.value = f"<table>{body}</table>"

    def on_session(self, event: SessionEvent | None) -> None:
        if self.counter is not None and self._needs_structured():
            self._request(self.ctx.session.generation)
        self.render()

    # ------------------------------------------------------ background count
    def _request(self, generation: int) -> None:
        self.ctx.status.set_busy("flops", True, "counting FLOPs")
        with self._cond:
            self._wanted = generation
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="pruneviz-flops", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no FLOPs count is pending (True) or the timeout passes."""
        with self._cond:
            return self._cond.wait_for(lambda: self._wanted < 0 or self._closed, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().close()

    def _loop(self) -> None:
        s = self.ctx.session
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted >= 0)
                if self._closed:
                    return
                gen = self._wanted
                # debounce: wait until the session has been still for a moment
                self._cond.wait_for(lambda g=gen: self._closed or self._wanted != g, DEBOUNCE_S)
                if self._closed:
                    return
                if self._wanted != gen:
                    continue
            result: tuple[int, tuple[str, ...]] | str | None = None
            if s.generation == gen:
                try:  # not under the session lock: a 1 s count must not block the slider
                    slim, coupled = slim_copy(s, self.example_input)
                    result = (count_flops(slim, self.example_input)[0], tuple(coupled))
                except Exception as e:  # noqa: BLE001 - shown in the table; stale failures are dropped
                    log.warning("pruneviz: counting FLOPs after channel removal failed", exc_info=True)
                    result = describe_error(e)
            with s.lock, self.ctx.lock:
                if s.generation == gen and result is not None:
                    if isinstance(result, str):
                        self._structured_error = (gen, result)
                    else:
                        self._structured = (gen, result[0], result[1])
                    self.render()
                    if self.on_update is not None:
                        self.ctx.call("update the headline", self.on_update)
                with self._cond:
                    if self._wanted == gen:
                        self._wanted = -1
                        self.ctx.status.set_busy("flops", False)
                    self._cond.notify_all()
