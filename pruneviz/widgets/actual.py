"""WhatYouGet: the physically smaller model, measured honestly, and BatchNorm re-calibration.

Instant figures (weights zeroed, parameters, nonzero values, the dense file size) follow every change. The
rest is measured on demand, by the Measure button, in a worker thread (never under the session's lock, never
blocking a slider): parameters, FLOPs and file size after removal, and the latency of the dense, masked and
removed models (and the removed one in ONNX Runtime) at batch 1 and at the batch size picked, with the threads
stated. A newer plan makes a running measurement stale: it stops and its result is dropped.

Re-calibrate re-estimates every BatchNorm's running statistics on a few batches of the calibration (else
evaluation) data (:mod:`pruneviz.core.recalibrate`); Undo, and any change of the plan, put the original
statistics back bit for bit. CSS hooks: ``pv-actual``, ``pv-actual-measure``, ``pv-actual-table``,
``pv-recalibrate``, ``pv-recalibrate-undo``, ``pv-recalibrate-result``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import ipywidgets as widgets

from ..core import SessionEvent
from ..core.recalibrate import (
    RecalibrationResult,
    StaleRecalibrationError,
    active_recalibration,
    batchnorms,
    recalibrate_batchnorm,
    recalibration_batches,
    revert_recalibration,
)
from ..core.removal_measure import FORMS, LABELS, ActualReport, MeasureCancelled, measure_actual
from .base import ViewContext, describe_error, esc, fmt_bytes, fmt_count, fmt_x

log = logging.getLogger("pruneviz.widgets")

MASKS_NOTE = ("Masks alone save nothing on a CPU: zeroed weights are still stored and still multiplied. Only "
              "removing whole channels (structured scope) makes the model smaller and faster.")
NOISY = 0.25  # IQR / median above this: the timing is flagged as noisy

CSS = """<style>
.pv-actual .pv-actual-note { color: #374151; font-size: 12px; line-height: 1.4; margin: 2px 0 4px; }
.pv-actual table { border-collapse: collapse; font-size: 12.5px; line-height: 1.5; width: 100%; }
.pv-actual th { text-align: left; color: #6b7280; font-weight: 500; padding: 0 8px 2px 0; white-space: nowrap; }
.pv-actual td { padding: 1px 8px 1px 0; white-space: nowrap; font-variant-numeric: tabular-nums; }
.pv-actual td.pv-form { color: #111827; font-weight: 600; }
.pv-actual .pv-bar { display: inline-block; height: 9px; background: #2563eb; border-radius: 2px;
                     vertical-align: middle; margin-right: 4px; }
.pv-actual tr.pv-f-masked .pv-bar, .pv-actual tr.pv-f-dense .pv-bar { background: #c3c9d3; }
.pv-actual .pv-x { font-weight: 700; color: #15803d; } .pv-actual .pv-slow { color: #b91c1c; }
.pv-actual .pv-iqr, .pv-actual .pv-dim { color: #9ca3af; font-size: 11px; }
.pv-actual .pv-noisy { color: #b45309; font-size: 11px; }
.pv-actual .pv-stale td, .pv-actual .pv-stale { color: #9ca3af; }
.pv-actual .pv-actual-summary { font-size: 13px; line-height: 1.45; color: #111827; margin-top: 4px; }
.pv-actual .pv-actual-kept { font-size: 11.5px; line-height: 1.4; color: #6b7280; }
.pv-actual .pv-recalibrate-result { font-size: 12.5px; line-height: 1.45; color: #111827; }
.pv-actual .widget-html-content { line-height: 1.45; }
</style>"""


def _ms(v: float) -> str:
    return f"{v:.3g} ms" if v < 100 else f"{v:.0f} ms"


class WhatYouGet(widgets.VBox):
    """The panel (class ``pv-actual``). Parts: ``batch`` and ``threads`` (Dropdowns), ``measure_button``,
    ``progress``, ``table`` (HTML, class ``pv-actual-table``), ``recal_button``, ``undo_button``, ``recal_result``.
    ``report`` is the last measurement shown (an :class:`ActualReport`), ``recalibration`` the last one made.
    Call :meth:`on_session` on every session event and :meth:`close` when done."""

    def __init__(self, ctx: ViewContext, example_input: Any, *, batch_sizes: tuple[int, ...] = (1, 8, 32),
                 batch_size: int = 8, min_run_time: float = 0.6, onnx: bool = True) -> None:
        self.ctx, self.example_input = ctx, example_input
        self.min_run_time, self.onnx = min_run_time, onnx
        self.report: ActualReport | None = None
        self.recalibration: RecalibrationResult | None = None
        self.message = ""  # why the last measurement is missing (stale, failed)
        self.recal_message = ""
        self._busy: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._step = ""
        style = {"description_width": "44px"}
        self.batch = widgets.Dropdown(options=[(f"{b}", b) for b in batch_sizes],
                                      value=batch_size if batch_size in batch_sizes else batch_sizes[-1],
                                      description="Batch", layout=widgets.Layout(width="120px"), style=style)
        self.batch.add_class("pv-actual-batch")
        cpus = max(1, os.cpu_count() or 1)
        self.threads = widgets.Dropdown(options=list(range(1, cpus + 1)), value=1, description="Threads",
                                        layout=widgets.Layout(width="130px"), style={"description_width": "56px"})
        self.threads.add_class("pv-actual-threads")
        self.measure_button = widgets.Button(description="Measure", icon="tachometer", button_style="primary",
                                             tooltip="time the dense, masked and smaller models (a few seconds)",
                                             layout=widgets.Layout(width="110px"))
        self.measure_button.add_class("pv-actual-measure")
        self.progress = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.progress.add_class("pv-actual-progress")
        self.table = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.table.add_class("pv-actual-table")
        self.recal_button = widgets.Button(description="Re-calibrate BatchNorm", icon="sliders",
                                           tooltip="re-estimate every BatchNorm's running statistics on a few "
                                                   "batches (no training); undoable",
                                           layout=widgets.Layout(width="190px"))
        self.recal_button.add_class("pv-recalibrate")
        self.undo_button = widgets.Button(description="Undo re-calibration", icon="undo",
                                          layout=widgets.Layout(width="170px"))
        self.undo_button.add_class("pv-recalibrate-undo")
        self.recal_result = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.recal_result.add_class("pv-recalibrate-result")
        self._has_bn = bool(batchnorms(ctx.session.model))
        self.measure_button.on_click(ctx.guard("measure the smaller model", source="actual")(self._on_measure))
        self.recal_button.on_click(ctx.guard("re-calibrate BatchNorm", source="actual")(self._on_recalibrate))
        self.undo_button.on_click(ctx.guard("undo the re-calibration", source="actual")(self._on_undo))
        head = widgets.HTML(CSS + '<div class="pv-section">What you actually get</div>'
                            f'<div class="pv-actual-note">{esc(MASKS_NOTE)}</div>')
        row = widgets.HBox([self.batch, self.threads, self.measure_button],
                           layout=widgets.Layout(align_items="center", width="100%"))
        recal = widgets.HBox([self.recal_button, self.undo_button], layout=widgets.Layout(width="100%"))
        super().__init__([head, row, self.progress, self.table, recal, self.recal_result],
                         layout=widgets.Layout(width="100%"))
        self.add_class("pv-actual")
        self.render()

    # ----------------------------------------------------------------- events
    def on_session(self, event: SessionEvent | None) -> None:
        """A change of the plan: instant figures now; a measurement of an older plan is shown as stale."""
        self.render()

    @property
    def busy(self) -> bool:
        return self._busy is not None

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until no measurement or re-calibration runs (True) or the timeout passes."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def stop(self) -> None:
        """Stop a running measurement (it ends at its next step) and wait for the worker."""
        self._closed = True
        self.wait_idle(10.0)

    def close(self) -> None:
        self.stop()
        super().close()

    # ---------------------------------------------------------------- actions
    def _start(self, kind: str, text: str, job: Any) -> None:
        if self._busy is not None:
            return
        self._busy = kind
        self.ctx.status.set_busy("actual", True, text)
        self.ctx.errors.clear("actual")
        self._step = text
        self.render()
        self._thread = threading.Thread(target=self._run, args=(kind, job), name=f"pruneviz-{kind}", daemon=True)
        self._thread.start()

    def _run(self, kind: str, job: Any) -> None:
        try:
            job()
        except Exception as e:  # noqa: BLE001 - shown in the app's error area, never raised in a thread
            log.warning("pruneviz: %s failed", kind, exc_info=True)
            where = "measure the smaller model" if kind == "measure" else "re-calibrate BatchNorm"
            self.ctx.errors.show(where, e, source="actual")
            if kind == "measure":
                self.message = f"Not measured: {describe_error(e)}"
        finally:
            with self.ctx.lock:
                self._busy, self._step = None, ""
                self.ctx.status.set_busy("actual", False)
                if not self._closed:
                    self.render()

    def _on_measure(self, _button: object = None) -> None:
        if self.example_input is None:
            raise ValueError("no example input: pass example_input=x[:1] (one sample the model takes) to explore().")
        s = self.ctx.session
        gen = s.generation
        sizes = tuple(dict.fromkeys((1, int(self.batch.value))))
        threads = int(self.threads.value)

        def progress(done: int, total: int, what: str) -> None:
            with self.ctx.lock:
                self._step = f"{what} ({min(done + 1, total)} of {total})" if done < total else ""
                self._render_progress()

        def job() -> None:
            try:
                rep = measure_actual(s, self.example_input, batch_sizes=sizes, threads=threads,
                                     min_run_time=self.min_run_time, onnx=self.onnx, progress=progress,
                                     cancel=lambda: self._closed or s.generation != gen)
            except MeasureCancelled:
                rep = None
            with s.lock, self.ctx.lock:
                if rep is None or s.generation != gen:
                    self.message = "The plan changed while measuring: press Measure again for this plan."
                else:
                    self.report, self.message = rep, ""

        self._start("measure", "measuring the smaller model", job)

    def _on_recalibrate(self, _button: object = None) -> None:
        s, live = self.ctx.session, self.ctx.live
        evaluator = live.evaluator if live is not None else None
        batches, source = recalibration_batches(s, evaluator.x if evaluator is not None else None)
        gen = s.generation
        final = live.latest_final if live is not None else None
        before = final if final is not None and final.generation == gen else None

        def job() -> None:
            try:
                r = recalibrate_batchnorm(s, batches, evaluator=evaluator, metric_before=before,
                                          on_change=self._recal_changed)
            except StaleRecalibrationError as e:
                self.recal_message = str(e)
                return
            r.source = source
            with self.ctx.lock:
                self.recalibration, self.recal_message = r, ""

        self._start("recalibrate", "re-calibrating BatchNorm", job)

    def _on_undo(self, _button: object = None) -> None:
        r = active_recalibration(self.ctx.session)
        if r is None:
            raise ValueError("there is no re-calibration in force to undo.")
        revert_recalibration(self.ctx.session, r)

    def _recal_changed(self, result: RecalibrationResult) -> None:
        """The BatchNorm statistics changed (applied or put back): the live evaluator must evaluate again."""
        if self.ctx.live is not None:
            self.ctx.live.request()
        with self.ctx.lock:
            if not self._closed:
                self.render()

    # ----------------------------------------------------------------- render
    def render(self) -> None:
        self._render_progress()
        self.table.value = self._table_html()
        self._render_recal()

    def _render_progress(self) -> None:
        if self._busy:
            self.progress.value = f'<span class="pv-help">⏳ {esc(self._step or self._busy)}…</span>'
        elif self.message:
            self.progress.value = f'<span class="pv-help">{esc(self.message)}</span>'
        else:
            self.progress.value = ""
        self.measure_button.disabled = self._busy is not None
        self.recal_button.disabled = self._busy is not None or not self._has_bn

    def _table_html(self) -> str:
        s = self.ctx.session
        summ = s.summary()
        structured = any(s.channel_mask(n) is not None for n in s.names)
        rep = self.report
        stale = rep is not None and rep.generation != s.generation
        if rep is None or stale:
            est = sum(t.numel() * t.element_size() for t in s.model.state_dict().values())
            rows = {"dense": (summ.total_params, summ.total_params, None, est),
                    "masked": (summ.total_params, summ.nonzero_params, None, est)}
        else:
            rows = {f: (x.params, x.nonzero, x.macs, x.file_bytes) for f, x in rep.forms.items()}
        sizes = rep.batch_sizes if rep is not None and not stale else tuple(dict.fromkeys((1, int(self.batch.value))))
        head = "".join(f"<th>batch {b}</th>" for b in sizes)
        body = []
        slowest = max([rep.median_ms(f, b) or 0 for f in FORMS for b in sizes] or [0]) if rep and not stale else 0
        for form in FORMS:
            if form not in rows:
                if form in ("removed", "onnx"):
                    why = "removal needs structured scope" if not structured else "press Measure"
                    cols = len(sizes) + 3
                    body.append(f'<tr class="pv-f-{form}"><td class="pv-form">{esc(LABELS[form])}</td>'
                                f'<td colspan="{cols}" class="pv-dim">{esc(why)}</td></tr>')
                continue
            params, nonzero, macs, size = rows[form]
            p = fmt_count(params) + (f' <span class="pv-dim">({fmt_count(nonzero)} nonzero)</span>'
                                     if nonzero != params and form == "masked" else "")
            flops = fmt_count(2 * macs) if macs else '<span class="pv-dim">–</span>'
            file = (fmt_bytes(size) if rep and not stale else f"≈{fmt_bytes(size)}") if size else "–"
            if rep and not stale and rep.forms[form].latency is None:
                note = rep.forms[form].note
                why = (note[:90] + "…" if len(note) > 90 else note) or "not measured"
                cells = f'<td colspan="{len(sizes)}" class="pv-dim" title="{esc(note)}">{esc(why)}</td>'
            else:
                cells = "".join(self._time_cell(rep, form, b, slowest) if rep and not stale else
                                '<td class="pv-dim">–</td>' for b in sizes)
            tip = ' title="ONNX Runtime also skips PyTorch\'s per-operator overhead, which dominates small models"' if (
                form == "onnx") else ""
            body.append(f'<tr class="pv-f-{form}"><td class="pv-form"{tip}>{esc(LABELS[form])}</td><td>{p}</td>'
                        f"<td>{flops}</td><td>{file}</td>{cells}</tr>")
        cls = ' class="pv-stale"' if stale else ""
        table = (f"<table{cls}><tr><th></th><th>parameters</th><th>FLOPs/sample</th><th>file</th>{head}</tr>"
                 + "".join(body) + "</table>")
        return table + self._summary_html(rep, stale, structured, summ.sparsity)

    def _time_cell(self, rep: ActualReport, form: str, b: int, slowest: float) -> str:
        row = rep.forms[form].latency.row(b)
        width = max(2, int(60 * row.median_ms / slowest)) if slowest else 2
        x = rep.speedup(form, b)
        tone = "pv-dim" if form == "masked" else "pv-x" if x and x >= 1.15 else "pv-slow" if x and x < 0.87 else "pv-dim"
        hint = ' title="the same dense kernels as the dense model: a difference is measurement noise"' if (
            form == "masked") else ""
        speed = "" if form == "dense" or x is None else f' <span class="{tone}"{hint}>{fmt_x(x)}</span>'
        noisy = ' <span class="pv-noisy" title="the CPU was busy: measure again">noisy</span>' if (
            row.iqr_ms > NOISY * row.median_ms) else ""
        return (f'<td class="pv-time" data-form="{form}" data-batch="{b}" data-ms="{row.median_ms:.6g}">'
                f'<span class="pv-bar" style="width:{width}px"></span>{_ms(row.median_ms)}'
                f'<span class="pv-iqr"> ±{row.iqr_ms:.2g}</span>{speed}{noisy}</td>')

    def _summary_html(self, rep: ActualReport | None, stale: bool, structured: bool, zeros: float) -> str:
        lines = [f"<b>{100 * zeros:.0f} %</b> of the prunable weights are zero (masks)"]
        if not structured:
            lines.append("removal needs structured scope (choose <i>structured</i> above): with masks alone the file "
                         "and the speed stay the dense model's")
        elif rep is None or stale:
            lines.append("press <b>Measure</b> for the smaller model's size and speed"
                         + (" (the figures shown are for an earlier plan)" if stale else ""))
        else:
            dense, removed = rep.forms["dense"], rep.forms["removed"]
            lines.append(f"after removal <b>{fmt_count(removed.params)}</b> parameters "
                         f"({100 * (1 - rep.params_ratio):.0f} % fewer), FLOPs ×{rep.macs_ratio:.2f}")
            b = rep.batch_sizes[-1]
            x = rep.speedup("removed", b)
            if x is not None and rep.macs_ratio:
                lines.append(f"measured <b>{fmt_x(x)}</b> faster at batch {b} ({rep.threads} thread"
                             f"{'s' if rep.threads > 1 else ''}, PyTorch) for {fmt_x(1 / rep.macs_ratio)} fewer MACs:"
                             " they differ, as time also goes to memory traffic, per-layer overheads and the layers "
                             "that stay")
                xo = rep.speedup("onnx", b)
                if xo is not None:
                    lines.append(f"in ONNX Runtime {fmt_x(xo)}")
            if dense.file_bytes and removed.file_bytes:
                lines.append(f"file {fmt_bytes(dense.file_bytes)} → {fmt_bytes(removed.file_bytes)}")
        out = '<div class="pv-actual-summary">' + " · ".join(lines) + "</div>"
        if rep is not None and not stale and rep.kept:
            names = ", ".join(sorted({k.name for k in rep.kept}))
            detail = "\n".join(f"{k.name}: {k.reason}" for k in rep.kept)
            out += (f'<div class="pv-actual-kept" title="{esc(detail)}">kept (pruned but not removable, still zero): '
                    f"{esc(names[:200])}</div>")
        return out

    def _render_recal(self) -> None:
        s = self.ctx.session
        active = active_recalibration(s)
        self.undo_button.disabled = active is None or self._busy is not None
        r = self.recalibration
        if not self._has_bn:
            text = '<span class="pv-help">No BatchNorm layer: nothing to re-calibrate.</span>'
        elif self.recal_message:
            text = f'<span class="pv-help">{esc(self.recal_message)}</span>'
        elif r is None:
            text = ('<span class="pv-help">Structured pruning leaves every BatchNorm with the dense network\'s '
                    "statistics; re-calibrating them on a few batches (no training) recovers much of the loss.</span>")
        elif r.active:
            text = f"Re-calibrated {len(r.layers)} BatchNorm layers on {r.samples} samples of the " \
                   f"{esc(r.source or 'data')} in {r.seconds:.2f} s{self._metric_text(r)}."
        else:
            why = f" {esc(r.reverted_by)}" if r.reverted_by else ""
            text = (f'<span class="pv-help">Re-calibration undone{why}: the original statistics are back. '
                    "Re-calibrate again for this plan.</span>")
        self.recal_result.value = text

    def _metric_text(self, r: RecalibrationResult) -> str:
        a, b = r.metric_before, r.metric_after
        if a is None or b is None or a.value is None or b.value is None:
            return ""
        live = self.ctx.live
        task = live.evaluator.task if live is not None else None
        pct = bool(task is not None and task.percent)
        label = task.metric_label if task is not None else a.metric

        def fmt(v: float) -> str:
            return f"{100 * v:.1f} %" if pct else f"{v:.3f}"

        delta = (b.value - a.value) * (100 if pct else 1)
        sign = "+" if delta >= 0 else "−"
        unit = " points" if pct else ""
        return (f": {esc(label)} <b>{fmt(a.value)} → {fmt(b.value)}</b> "
                f'(<span class="{"pv-x" if delta >= 0 else "pv-slow"}">{sign}{abs(delta):.3g}{unit}</span>)')
