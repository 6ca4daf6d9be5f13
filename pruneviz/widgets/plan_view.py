"""PlanFinderView: "Find a plan" from a budget (a tolerance on the headline metric and an objective).

The search (:func:`pruneviz.core.plan_finder.find_plan`) runs in a background thread on a private copy of the
model; every measured plan lands on its trail (one FigureWidget, created once: metric vs. weights removed,
within-tolerance points green, others red, the unpruned line and the tolerance line). At the end the best plan
is applied with ``session.apply_plan`` (an ordinary change: Undo goes back); a cancelled search applies nothing
(the Apply button then applies its best plan so far).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..core.plan_finder import PlanIteration, PlanResult, find_plan
from ..core.sensitivity import DEFAULT_LEVELS
from .base import COLORS, ViewContext, esc, short_name
from .compare import JobControls, _live_data
from .figures import FigureWidget, snapshot


class PlanTraces:
    PATH = 0  # every measured plan, in order
    HOLDS = 1  # within the tolerance
    FAILS = 2  # outside it
    BEST = 3  # the plan found


def make_plan_figure() -> go.FigureWidget:
    fig = go.Figure()
    fig.add_trace(go.Scatter(name="search path", x=[], y=[], mode="lines", showlegend=False,
                             line={"color": "#cbd5e1", "width": 1}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(name="within tolerance", x=[], y=[], mode="markers", customdata=[],
                             marker={"color": COLORS["good"], "size": 8},
                             hovertemplate="#%{customdata}: %{x:.1f} % removed, %{y:.3g}<extra>holds</extra>"))
    fig.add_trace(go.Scatter(name="outside", x=[], y=[], mode="markers", customdata=[],
                             marker={"color": COLORS["warn"], "size": 8, "symbol": "x"},
                             hovertemplate="#%{customdata}: %{x:.1f} % removed, %{y:.3g}<extra>too costly</extra>"))
    fig.add_trace(go.Scatter(name="plan found", x=[], y=[], mode="markers",
                             marker={"color": "rgba(0,0,0,0)", "size": 18, "symbol": "star",
                                     "line": {"color": COLORS["baseline"], "width": 2}},
                             hovertemplate="found: %{x:.1f} % removed, %{y:.3g}<extra></extra>"))
    line = {"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": 0, "y1": 0, "visible": False}
    fig.update_layout(template="plotly_white", width=880, height=340, autosize=False, title={"text": "Search trail",
                      "font": {"size": 13}}, margin={"l": 60, "r": 20, "t": 40, "b": 50}, hovermode="closest",
                      legend={"font": {"size": 10}, "x": 0.01, "y": 0.02, "yanchor": "bottom"},
                      shapes=[{**line, "line": {"color": COLORS["baseline"], "width": 1, "dash": "dot"}},
                              {**line, "line": {"color": COLORS["warn"], "width": 1, "dash": "dash"}}])
    fig.update_xaxes(title_text="weights removed (%)", range=[0, 101])
    fig.update_yaxes(title_text="metric")
    return FigureWidget(fig)


class PlanFinderView(widgets.VBox):
    """The "Find a plan" view (CSS class ``pv-plan``). Parts: ``tolerance`` (in points for % metrics),
    ``objective``, ``budget`` (seconds), ``job`` (:class:`JobControls`: ``run_button`` = Find, class
    ``pv-plan-find``; ``cancel_button``; ``progress``), ``apply_button``, ``figure``, ``table``; ``result``: the
    last :class:`PlanResult`; ``iterations``: what the trail shows. ``on_iteration(it)`` is called with every
    measured plan (from the worker thread, no lock held: take ``session.lock`` before ``ctx.lock`` in it)."""

    def __init__(self, ctx: ViewContext, data: Any = None, *, levels: tuple[float, ...] = DEFAULT_LEVELS,
                 evaluator_kwargs: dict[str, Any] | None = None, auto_apply: bool = True,
                 on_iteration: Callable[[PlanIteration], None] | None = None) -> None:
        self.ctx = ctx
        self.on_iteration = on_iteration
        self.data = data if data is not None else _live_data(ctx)
        self.levels = tuple(levels)
        self.evaluator_kwargs = evaluator_kwargs
        self.auto_apply = auto_apply
        self.result: PlanResult | None = None
        self.iterations: list[PlanIteration] = []
        task = ctx.live.evaluator.task if ctx.live is not None else None
        self.percent = bool(task is not None and task.percent)
        self.scale = 100.0 if self.percent else 1.0
        self.tolerance = widgets.BoundedFloatText(value=1.0 if self.percent else 0.01, min=0.0, max=1e6, step=0.1,
                                                  description="Max drop" + (" (points)" if self.percent else ""),
                                                  style={"description_width": "120px"},
                                                  layout=widgets.Layout(width="220px"))
        self.tolerance.add_class("pv-plan-tolerance")
        self.objective = widgets.ToggleButtons(options=[("fewest weights", "params"), ("fewest FLOPs", "flops")],
                                               value="params", style={"button_width": "110px"})
        self.objective.add_class("pv-plan-objective")
        self.budget = widgets.BoundedIntText(value=30, min=1, max=3600, description="Time (s)",
                                             layout=widgets.Layout(width="150px"))
        self.budget.add_class("pv-plan-budget")
        self.job = JobControls(ctx, "pv-plan", "Find a plan", "pv-plan-find", "plan", "find a plan")
        self.apply_button = widgets.Button(description="Apply plan", icon="check", disabled=True,
                                           tooltip="apply the best plan found (Undo goes back)")
        self.apply_button.add_class("pv-plan-apply")
        self.figure = make_plan_figure()
        ctx.figures.append(self.figure)
        self.table = widgets.HTML()
        self.table.add_class("pv-plan-table")
        self.job.run_button.on_click(ctx.guard("start the plan search", source="plan")(lambda _: self.run()))
        self.apply_button.on_click(ctx.guard("apply the plan found", source="plan")(lambda _: self.apply()))
        if self.data is None:
            self.job.run_button.disabled = True
            self.job.say("no evaluation data: pass data=(inputs, labels) to search a plan")
        help_text = ("Starts from the sensitivity sweep's suggestion, then measures the combined plan and backs off "
                     "or pushes layers until the measured metric holds, within the time budget. Your plan changes "
                     "only at the end (Undo goes back).")
        super().__init__([widgets.HTML('<div class="pv-section">Find a plan</div>'),
                          widgets.HTML(f'<span class="pv-help">{esc(help_text)}</span>'),
                          widgets.HBox([self.tolerance, self.objective, self.budget]), self.job, self.apply_button,
                          self.figure, self.table])
        self.add_class("pv-plan")

    # ------------------------------------------------------------------ running
    def run(self) -> bool:
        """Start the search with the tolerance, objective and time budget shown (False if one is running)."""
        if self.job.running:
            return False
        tol = float(self.tolerance.value) / self.scale
        objective, budget = self.objective.value, float(self.budget.value)
        self.iterations = []
        self.apply_button.disabled = True
        self._draw()
        return self.job.start(lambda cancel: self._work(tol, objective, budget, cancel))

    def _work(self, tol: float, objective: str, budget: float, cancel: threading.Event) -> None:
        s = self.ctx.session
        self.job.say("sensitivity sweep…")

        def progress(done: int, total: int, info: dict[str, Any]) -> None:
            if info.get("phase") == "sweep":
                self.job.set_progress(done, total)
                self.job.say(f"sensitivity sweep {done}/{total}")
                return
            it: PlanIteration = info["iteration"]
            self.job.set_progress(int(1000 * min(1.0, it.elapsed / budget)), 1000)
            self.job.say(f"iteration {it.index}: {it.action} {it.layer or ''} · {self._fmt(it.value)} at "
                         f"{100 * it.weights_removed:.1f} % removed{'' if it.feasible else ' (too costly)'}")
            self.iterations.append(it)
            self._draw()
            if self.on_iteration is not None:  # worker thread, no lock held (e.g. the explorer's accuracy trail)
                self.ctx.call("show a plan on the trail", self.on_iteration, it)

        result = find_plan(s, self.data, tolerance=tol, objective=objective, time_budget_s=budget, progress=progress,
                           cancel=cancel, levels=self.levels, evaluator_kwargs=self.evaluator_kwargs)
        self.result = result
        self.iterations = [it for it in result.iterations if it.action != "undo push"]
        self._draw()
        best = result.best
        if best is None:
            self.job.say(f"no pruned plan held within the tolerance ({result.stopped})")
            return
        self.apply_button.disabled = False
        summary = (f"{result.stopped}: {100 * best.weights_removed:.1f} % of weights removed at "
                   f"{self._fmt(best.value)} (unpruned {self._fmt(result.baseline)}), {len(result.iterations)} "
                   f"iterations in {result.elapsed:.1f} s")
        if self.auto_apply and result.stopped != "cancelled":
            self.apply()  # not under the view's lock: the session's listeners take session.lock first
            summary += " · applied (Undo goes back)"
        self.job.say(summary)

    def apply(self) -> None:
        """Apply the best plan found with ``session.apply_plan`` (undoable)."""
        if self.result is None or self.result.best is None:
            return
        self.ctx.session.apply_plan(self.result.plan)

    # ------------------------------------------------------------------ drawing
    def _fmt(self, v: float) -> str:
        return f"{100 * v:.1f} %" if self.percent else f"{v:.4g}"

    def _draw(self) -> None:
        its = list(self.iterations)
        k = self.scale
        fig = self.figure
        x = np.asarray([100 * it.weights_removed for it in its], dtype=np.float32)
        y = np.asarray([k * it.value for it in its], dtype=np.float32)
        ok = np.asarray([it.feasible for it in its], dtype=bool)
        idx = np.asarray([it.index for it in its], dtype=np.int32)
        res = self.result
        with self.ctx.lock, fig.batch_update():
            fig.data[PlanTraces.PATH].update(x=x, y=y)
            fig.data[PlanTraces.HOLDS].update(x=x[ok], y=y[ok], customdata=idx[ok])
            fig.data[PlanTraces.FAILS].update(x=x[~ok], y=y[~ok], customdata=idx[~ok])
            best = res.best if res is not None else None
            fig.data[PlanTraces.BEST].update(x=[] if best is None else [100 * best.weights_removed],
                                             y=[] if best is None else [k * best.value])
            if res is not None:
                base = k * res.baseline
                limit = base - k * res.tolerance if res.higher_is_better else base + k * res.tolerance
                fig.layout.shapes[0].update(visible=True, y0=base, y1=base)
                fig.layout.shapes[1].update(visible=True, y0=limit, y1=limit)
                fig.layout.yaxis.title.text = res.metric + (" (%)" if self.percent else "")
            self.table.value = self._table_html(res)
            snapshot(fig)

    def _table_html(self, res: PlanResult | None) -> str:
        if res is None or res.best is None:
            return ""
        by = {t.name: t for t in self.ctx.session.targets}
        unit = "channels" if res.plan.scope == "structured" else "weights"
        rows = "".join(f"<tr><td class='pv-key'>{esc(short_name(by[n]) if n in by else n)}</td>"
                       f"<td class='pv-num'>{100 * v:.0f} %</td></tr>" for n, v in res.plan.sparsity.items())
        return (f'<div class="pv-help">The plan found ({esc(unit)} removed per layer, {esc(res.plan.criterion)}):'
                f"</div><div class='pv-summary'><table>{rows}</table></div>")

    def wait(self, timeout: float = 120.0) -> bool:
        return self.job.wait(timeout)

    def close(self) -> None:
        self.job.close()
        if self.figure in self.ctx.figures:
            self.ctx.figures.remove(self.figure)
        super().close()
