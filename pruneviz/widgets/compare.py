"""CompareView: the criterion race in the explorer ("Compare"), with a progress bar and Cancel.

The race runs in a background thread on private copies of the model (:func:`pruneviz.core.race.criterion_race`
only reads the session: its plan, masks and weights stay as they are). Results go into one FigureWidget,
created once: the trade-off curves (left, mean ± sd over seeds) and each criterion's gap to the random baseline
with its 95 % interval (right); a small table shows how far each criterion's pruned weights agree with
magnitude's. :class:`JobControls` (Run, Cancel, progress, status) is shared with the plan finder.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.race import criterion_race, known_criteria, needs_data, resolve_criterion
from ..core.race_result import RaceResult
from .base import COLORS, TRAIL_COLORS, ViewContext, describe_error, esc, get_criterion_label
from .figures import FigureWidget, snapshot

log = logging.getLogger("pruneviz.widgets")

#: trace slots of the curves (criterion x scope series beyond this are not drawn)
MAX_SERIES = 18
COMPARE_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COLOR_OF = {"magnitude": "#2563eb", "random": "#6b7280", "saliency": "#f59e0b", "taylor": "#16a34a",
            "l1_filter": "#9333ea", "l2_filter": "#db2777", "bn_scale": "#0891b2", "lamp": "#dc2626",
            "wanda": "#854d0e"}
DASH_OF = {"global": "solid", "layer": "dash", "structured": "dot"}


def _live_data(ctx: ViewContext) -> Any:
    """The live evaluator's evaluation subset as (inputs, targets), or None without data."""
    if ctx.live is None:
        return None
    samples = ctx.live.evaluator.samples
    return samples.inputs, samples.targets


class JobControls(widgets.HBox):
    """Run / Cancel buttons, an ``IntProgress`` and a status line for one background job at a time.

    ``start(work)`` runs ``work(cancel_event)`` in a daemon thread (ignored while a job runs); errors are shown
    in the explorer's error area under ``source``. ``wait(timeout)`` joins the job (scripts and tests).
    """

    def __init__(self, ctx: ViewContext, prefix: str, run_label: str, run_class: str, source: str, where: str) -> None:
        self.ctx, self.source, self.where = ctx, source, where
        self.run_button = widgets.Button(description=run_label, button_style="primary", icon="play")
        self.run_button.add_class(run_class)
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.cancel_button.add_class(f"{prefix}-cancel")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="220px"))
        self.progress.add_class(f"{prefix}-progress")
        self.status = widgets.HTML(value='<span class="pv-help">idle</span>')
        self.status.add_class(f"{prefix}-status")
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__([self.run_button, self.cancel_button, self.progress, self.status],
                         layout=widgets.Layout(align_items="center", flex_flow="row wrap"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def say(self, text: str, help_style: bool = True) -> None:
        self.status.value = f'<span class="pv-help">{esc(text)}</span>' if help_style else esc(text)

    def set_progress(self, done: int, total: int) -> None:
        self.progress.max = max(1, int(total))
        self.progress.value = min(int(done), self.progress.max)

    def start(self, work: Callable[[threading.Event], None]) -> bool:
        if self.running:
            return False
        self._cancel = threading.Event()
        self.ctx.errors.clear(self.source)
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self.progress.bar_style = "info"
        self.set_progress(0, 1)
        self.ctx.status.set_busy(self.source, True, self.where)
        self._thread = threading.Thread(target=self._run, args=(work, self._cancel), daemon=True,
                                        name=f"pruneviz-{self.source}")
        self._thread.start()
        return True

    def _run(self, work: Callable[[threading.Event], None], cancel: threading.Event) -> None:
        try:
            work(cancel)
            self.progress.bar_style = "warning" if cancel.is_set() else "success"
        except Exception as e:  # noqa: BLE001 - shown in the error area, never raised in a thread
            log.warning("pruneviz: %s failed", self.where, exc_info=True)
            self.ctx.errors.show(self.where, e, source=self.source)
            self.progress.bar_style = "danger"
            self.say(f"failed: {describe_error(e)}")
        finally:
            self.run_button.disabled, self.cancel_button.disabled = False, True
            self.ctx.status.set_busy(self.source, False)

    def cancel(self) -> None:
        self._cancel.set()
        if self.running:
            self.say("cancelling…")

    def wait(self, timeout: float = 120.0) -> bool:
        """Block until the job is done (True) or ``timeout`` passes."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.running

    def close(self) -> None:
        self._cancel.set()
        super().close()


def make_compare_figure() -> go.FigureWidget:
    """Curves (left, ``MAX_SERIES`` slots) and gap to random (right, one horizontal bar trace)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.2,
                        subplot_titles=("Metric vs. weights removed", "Gap to random (95 % interval)"))
    for i in range(MAX_SERIES):
        fig.add_trace(go.Scatter(name=f"series {i}", x=[], y=[], mode="lines+markers", visible=False,
                                 line={"width": 2}, marker={"size": 5},
                                 error_y={"type": "data", "array": [], "visible": True, "thickness": 1},
                                 hovertemplate="%{x:.1f} % removed: %{y:.3g}<extra>%{fullData.name}</extra>"), 1, 1)
    fig.add_trace(go.Bar(name="gap", x=[], y=[], orientation="h", showlegend=False, marker={"color": []},
                         error_x={"type": "data", "array": [], "arrayminus": [], "visible": True},
                         hovertemplate="%{y}: %{x:+.3g}<extra></extra>"), 1, 2)
    fig.update_layout(template="plotly_white", width=880, height=400, autosize=False,
                      margin={"l": 60, "r": 20, "t": 40, "b": 50}, hovermode="closest",
                      legend={"font": {"size": 10}, "x": 0.0, "y": -0.2, "orientation": "h"},
                      shapes=[{"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
                               "visible": False, "line": {"color": COLORS["muted"], "width": 1, "dash": "dot"}}])
    fig.update_xaxes(title_text="weights removed (%)", range=[0, 101], row=1, col=1)
    fig.update_yaxes(title_text="metric", row=1, col=1)
    fig.update_xaxes(title_text="criterion − random", zeroline=True, row=1, col=2)
    fig.update_yaxes(automargin=True, tickfont={"size": 10}, autorange="reversed", row=1, col=2)
    return FigureWidget(fig)


class CompareView(widgets.VBox):
    """The "Compare" view (CSS class ``pv-compare``). Parts: ``criteria`` and ``scopes`` (SelectMultiple),
    ``seeds``, ``axis`` ("weights" / "flops"), ``job`` (:class:`JobControls`: ``run_button``, ``cancel_button``,
    ``progress``), ``figure`` (its one FigureWidget), ``agreement`` (HTML table); ``result``: the last
    :class:`RaceResult`. ``data``: the evaluation data (default: the live evaluator's subset)."""

    def __init__(self, ctx: ViewContext, data: Any = None, *, calib_data: Any = None,
                 sparsities: tuple[float, ...] = COMPARE_SPARSITIES, evaluator_kwargs: dict[str, Any] | None = None,
                 executor: Any = "inline") -> None:
        self.ctx = ctx
        self.data = data if data is not None else _live_data(ctx)
        self.calib_data = calib_data
        self.sparsities = tuple(sparsities)
        self.evaluator_kwargs = evaluator_kwargs
        self.executor = executor
        self.result: RaceResult | None = None
        s = ctx.session
        has_calib = calib_data is not None or s.has_calib_data
        names = [n for n in known_criteria() if has_calib or not needs_data(resolve_criterion(n)[1])]
        default = [n for n in ("magnitude", "random", "lamp", "wanda", "taylor") if n in names]
        self.criteria = widgets.SelectMultiple(options=[(get_criterion_label(n), n) for n in names], value=default,
                                               rows=min(9, len(names)), description="Criteria",
                                               layout=widgets.Layout(width="280px"))
        self.criteria.add_class("pv-compare-criteria")
        self.scopes = widgets.SelectMultiple(options=[("global", "global"), ("per layer", "layer"),
                                                      ("structured", "structured")], value=("global", "layer"),
                                             rows=3, description="Scopes", layout=widgets.Layout(width="220px"))
        self.scopes.add_class("pv-compare-scopes")
        self.seeds = widgets.BoundedIntText(value=1, min=1, max=10, description="Seeds",
                                            layout=widgets.Layout(width="140px"))
        self.axis = widgets.ToggleButtons(options=[("% weights", "weights"), ("% FLOPs", "flops")], value="weights",
                                          style={"button_width": "80px"})
        self.axis.add_class("pv-compare-axis")
        self.job = JobControls(ctx, "pv-compare", "Run race", "pv-compare-run", "compare", "compare criteria")
        self.help = widgets.HTML(
            '<span class="pv-help">Races the chosen criteria on private copies of the model: your plan stays as '
            "it is. Curves: mean ± sd over seeds (seeds reseed the random criterion).</span>")
        self.figure = make_compare_figure()
        ctx.figures.append(self.figure)
        self.agreement = widgets.HTML()
        self.agreement.add_class("pv-compare-agreement")
        self.job.run_button.on_click(ctx.guard("start the race", source="compare")(lambda _: self.run()))
        self.axis.observe(ctx.guard("redraw the race", source="compare")(lambda _: self.draw()), names="value")
        if self.data is None:
            self.job.run_button.disabled = True
            self.job.say("no evaluation data: pass data=(inputs, labels) to compare criteria")
        body = widgets.HBox([self.criteria, widgets.VBox([self.scopes, self.seeds, self.axis])])
        super().__init__([widgets.HTML('<div class="pv-section">Compare criteria</div>'), self.help, body, self.job,
                          self.figure, self.agreement])
        self.add_class("pv-compare")

    # ------------------------------------------------------------------ running
    def run(self) -> bool:
        """Start the race with the chosen criteria, scopes and seeds (False if one is running)."""
        crit, scopes = list(self.criteria.value), list(self.scopes.value)
        if not crit or not scopes:
            self.job.say("choose at least one criterion and one scope")
            return False
        seeds = int(self.seeds.value)
        return self.job.start(lambda cancel: self._work(crit, scopes, seeds, cancel))

    def _work(self, crit: list[str], scopes: list[str], seeds: int, cancel: threading.Event) -> None:
        self.job.say("racing…")

        def progress(done: int, total: int, info: dict[str, Any]) -> None:
            self.job.set_progress(done, total)
            eta = info.get("eta")
            self.job.say(f"{done}/{total} evaluations · {info.get('criterion', '')} · {info.get('scope', '')}"
                         + (f" · {eta:.0f} s left" if eta is not None else ""))

        race = criterion_race(self.ctx.session, self.data, criteria=crit, scopes=scopes, sparsities=self.sparsities,
                              seeds=seeds, executor=self.executor, calib_data=self.calib_data, progress=progress,
                              cancel=cancel, evaluator_kwargs=self.evaluator_kwargs)
        agreement = self._agreement_html(race) if not race.cancelled else ""
        self.result = race
        with self.ctx.lock:
            self.draw()
            self.agreement.value = agreement
        self.job.say(("cancelled: partial results" if race.cancelled else "done") + f" in {race.elapsed:.1f} s")

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        """Draw ``result`` (curves on the chosen axis and the gaps); called with results or on an axis change."""
        race = self.result
        if race is None:
            return
        k = 100.0 if race.percent else 1.0
        curves = race.curves(self.axis.value)[:MAX_SERIES]
        palette = iter(TRAIL_COLORS)
        fig = self.figure
        with self.ctx.lock, fig.batch_update():
            for i in range(MAX_SERIES):
                tr = fig.data[i]
                if i >= len(curves):
                    tr.visible = False
                    continue
                c = curves[i]
                color = COLOR_OF.get(c.criterion) or next(palette, COLORS["muted"])
                tr.update(name=f"{get_criterion_label(c.criterion)} · {c.scope}", visible=True,
                          x=np.asarray(c.x, dtype=np.float32), y=np.asarray([k * v for v in c.y], dtype=np.float32),
                          line={"color": color, "dash": DASH_OF.get(c.scope, "solid")}, marker={"color": color},
                          error_y={"array": np.asarray([k * v for v in c.y_sd], dtype=np.float32)})
            gaps = race.gaps()
            bar = fig.data[MAX_SERIES]
            mean = [k * g.mean for g in gaps]
            bar.update(y=[f"{g.criterion} · {g.scope}" for g in gaps], x=np.asarray(mean, dtype=np.float32),
                       marker={"color": [COLOR_OF.get(g.criterion, COLORS["muted"]) for g in gaps]},
                       error_x={"array": np.asarray([0 if math.isnan(g.high) else k * g.high - m
                                                     for g, m in zip(gaps, mean, strict=True)], dtype=np.float32),
                                "arrayminus": np.asarray([0 if math.isnan(g.low) else m - k * g.low
                                                          for g, m in zip(gaps, mean, strict=True)], dtype=np.float32)})
            label = f"{race.metric_label}{' (%)' if race.percent else ''}"
            fig.layout.yaxis.title.text = label
            axis_text = "weights removed (%)" if self.axis.value == "weights" else "FLOPs removed, zeros skipped (%)"
            fig.layout.xaxis.title.text = axis_text
            fig.layout.annotations[0].text = f"{race.metric_label} vs. {axis_text.split(' (')[0]}"
            fig.layout.shapes[0].update(visible=True, y0=k * race.baseline, y1=k * race.baseline)
            snapshot(fig)

    def _agreement_html(self, race: RaceResult) -> str:
        if "magnitude" not in race.criteria or len(race.criteria) < 2:
            return ""
        scope = race.scopes[0]
        sp = min(race.sparsities, key=lambda v: (abs(v - 0.5), v))
        rows = []
        for c in race.criteria:
            if c == "magnitude":
                continue
            a = race.jaccard("magnitude", c, sp, scope)
            rows.append(f"<tr><td class='pv-key'>{esc(c)}</td><td class='pv-num'>{a.overall:.2f}</td></tr>")
        return (f'<div class="pv-help">Agreement with magnitude at {100 * sp:.0f} % ({esc(scope)} scope): Jaccard '
                f"overlap of the pruned weights (1 = the same weights).</div><div class='pv-summary'><table>"
                f"{''.join(rows)}</table></div>")

    def wait(self, timeout: float = 120.0) -> bool:
        return self.job.wait(timeout)

    def close(self) -> None:
        self.job.close()
        if self.figure in self.ctx.figures:
            self.ctx.figures.remove(self.figure)
        super().close()
