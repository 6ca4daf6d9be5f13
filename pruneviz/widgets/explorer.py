"""The explorer: composes the views around one PruningSession and one LiveEvaluator.

``pv.explore()`` opens the embedded demo (a small CNN on 8x8 digits); ``pv.explore(model, (x, y))`` opens
yours. Data flows one way: controls -> session -> (events) -> views; live results -> views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

from ..core import PruningSession, SessionEvent
from ..core.live import LiveEvaluator, LiveEvent
from ..core.session import PROGRESS_MIN
from .accuracy import LiveAccuracy
from .actual import WhatYouGet
from .allocation import LayerAllocation
from .base import CSS, ViewContext, esc, excluded_detail, excluded_summary, fmt_count
from .changes import WhatChanged
from .controls import Controls
from .deferred import DeferredPlotly
from .errors import ErrorArea
from .figures import make_main_figure
from .filters import FilterImportance
from .headline import Headline
from .histogram import WeightHistogram
from .samples import SHOW
from .status import ProgressLine, StatusIndicator
from .summary import SummaryView
from .tools import ToolsPanel

log = logging.getLogger("pruneviz.widgets")

Batch = tuple[torch.Tensor, torch.Tensor]


class Explorer(widgets.VBox):
    """The pruning dashboard (an ``ipywidgets.VBox``): display it, or read its parts in tests.

    Parts: ``session``, ``live`` (None without data), ``controls``, ``histogram``, ``allocation``,
    ``accuracy``, ``changes``, ``filters``, ``summary``, ``headline``, ``status``, ``errors``,
    ``main_figure`` and ``filter_figure`` (the only two FigureWidgets). Call :meth:`close` when done.
    """

    def __init__(
        self,
        session: PruningSession,
        data: Any = None,
        *,
        class_names: Sequence[str] | None = None,
        example_input: torch.Tensor | None = None,
        subset_size: int | None = None,
        title: str | None = None,
        live_options: dict[str, Any] | None = None,
        defer_plots: bool = False,
        plotly_bundle: str | None = None,
        hints: dict[str, Any] | None = None,
        exports: str = "folder",
    ) -> None:
        self.session = session
        self._hints = dict(hints or {})
        self._exports = exports
        self._deferred: DeferredPlotly | None = None
        self.errors = ErrorArea()
        self.status = StatusIndicator()
        self.progress_line = ProgressLine()
        self.live: LiveEvaluator | None = None
        self._unsubscribe: list[Any] = []
        self._ready = False
        try:
            self._build(session, data, class_names, example_input, subset_size, live_options)
        except BaseException:  # nothing may keep running, listening or alive after a failed build
            self._stop()
            for name in ("errors", "status", "progress_line", "controls", "histogram", "allocation", "accuracy", "changes",
                         "main_figure", "filters", "summary", "headline", "actual", "tools"):
                part = getattr(self, name, None)
                if isinstance(part, widgets.Widget):
                    _close_tree(part)
            raise
        if defer_plots:  # the app: plotly.js loads once the page is interactive (see deferred.py)
            self._deferred = DeferredPlotly([self.main_figure, self.filter_figure], bundle=plotly_bundle,
                                            before_load=self._send_figure_state)
        super().__init__(self._layout(session, title), layout=widgets.Layout(width="100%"))
        self.add_class("pv-explorer")

    def _build(self, session: PruningSession, data: Any, class_names: Sequence[str] | None,
               example_input: torch.Tensor | None, subset_size: int | None,
               live_options: dict[str, Any] | None) -> None:
        if data is not None:
            # a big model's first full forward takes seconds: the explorer opens first, the worker measures it
            big = sum(t.numel for t in session.targets) >= PROGRESS_MIN
            opts = {"subset_size": subset_size, "background_baseline": big, **(live_options or {})}
            self.live = LiveEvaluator(session, data, start=False, **opts)  # started once the views listen
            self._unsubscribe.append(self.live.on_event(self._on_live))
            if example_input is None:
                example_input = self.live.evaluator.example_input(1)
        if class_names is None:
            class_names = getattr(data, "classes", None)
        num_classes = self.live.evaluator.num_classes if self.live is not None else 0
        names = [str(c) for c in class_names] if class_names is not None else []
        if len(names) != num_classes:
            names = [str(i) for i in range(num_classes)]
        self.ctx = ViewContext(session=session, errors=self.errors, status=self.status, live=self.live,
                               class_names=names, hints=self._hints)
        with session.lock, self.ctx.lock:
            self.main_figure = make_main_figure()
            with self.main_figure.batch_update():
                self.controls = Controls(self.ctx, has_calib=session.has_calib_data, export_mode=self._exports,
                                         export_name=type(session.model).__name__)
                self.histogram = WeightHistogram(self.ctx, self.main_figure)
                self.allocation = LayerAllocation(self.ctx, self.main_figure)
                self.accuracy = LiveAccuracy(self.ctx, self.main_figure)
                self.changes = WhatChanged(self.ctx, self.main_figure, names)
            self.filters = FilterImportance(self.ctx)
            self.filter_figure = self.filters.figure
            self.ctx.figures.extend([self.main_figure, self.filter_figure])
            self.summary = SummaryView(self.ctx, example_input, on_update=self._on_flops)
            self.headline = Headline(self.ctx, self.summary.flops_now)
            self.tools = ToolsPanel(self.ctx, esm_url=self._tool_esm)
            self.actual = WhatYouGet(self.ctx, example_input)
            self._views = [self.controls, self.histogram, self.allocation, self.filters, self.summary,
                           self.accuracy, self.headline, self.actual]
            self._unsubscribe.append(session.on_change(self._on_session))
            session.progress = self._on_rank_progress
            self._unsubscribe.append(lambda: setattr(session, "progress", None))
            if self.live is not None and self.live.status == "busy":
                self.status.set_busy("evaluation", True, "evaluating")
            self.ctx.snapshot()
            self._ready = True
        if self.live is not None:
            self.live.start()

    # ------------------------------------------------------------------ layout
    def _layout(self, s: PruningSession, title: str | None) -> list[widgets.Widget]:
        summ = s.summary()
        n = self.live.evaluator.total if self.live is not None else 0
        label = self.live.evaluator.task.metric_label if self.live is not None else ""
        sub = (f"{len(s.targets)} prunable tensors · {fmt_count(summ.prunable_params)} prunable weights"
               + (f" · {label.lower() if label == 'Accuracy' else label} measured on {n} samples" if n else ""))
        skipped = excluded_summary(s.excluded)
        head = widgets.HTML(
            CSS + f'<div class="pv-title">{esc(title or "pruneviz: " + type(s.model).__name__)}</div>'
            f'<div class="pv-subtitle">{esc(sub)}</div>'
            + (f'<div class="pv-subtitle pv-excluded" title="{esc(excluded_detail(s.excluded))}">not pruned: '
               f"{esc(skipped)}</div>" if skipped else "")
        )
        header = widgets.HBox([head, widgets.VBox([self.status, self.progress_line])], layout=widgets.Layout(
            justify_content="space-between", align_items="center", width="100%"))
        live_row = widgets.HBox(
            [widgets.VBox([self.accuracy], layout=widgets.Layout(width="46%")),
             widgets.VBox([self.summary], layout=widgets.Layout(width="54%"))],
            layout=widgets.Layout(width="100%"),
        )
        section = widgets.HTML('<div class="pv-section">What changed</div>')
        plots = widgets.VBox([self.histogram, self.main_figure])
        plots.add_class("pv-hist")  # `.pv-hist .main-svg`: the histogram's figure
        right = widgets.VBox(
            [live_row, self.allocation, plots, self.actual, section, self.changes, self.filters, self.tools],
            layout=widgets.Layout(width="900px", min_width="880px"),
        )
        body = widgets.HBox([self.controls, right], layout=widgets.Layout(flex_flow="row wrap", width="100%"))
        parts = [header, self.headline, self.errors, body]
        return parts + [self._deferred.widget] if self._deferred is not None else parts

    # ---------------------------------------------------------------- dispatch
    def _on_session(self, event: SessionEvent) -> None:
        """Kernel thread (or whoever changed the session): re-render every view, each guarded."""
        s = self.session
        with s.lock, self.ctx.lock, self.main_figure.batch_update(), self.filter_figure.batch_update():
            if s.generation != event.generation:
                return  # a newer change follows: its own event renders
            self.errors.clear("action")
            for view in self._views:
                self.ctx.call(f"update the {type(view).__name__} view", view.on_session, event)
        with s.lock, self.ctx.lock:
            self.ctx.snapshot()

    def _on_live(self, event: LiveEvent) -> None:
        """Worker thread: keep it small (labels, a few arrays)."""
        if event.kind == "status":
            self.status.set_busy("evaluation", event.status == "busy", "evaluating")
            return
        if not self._ready:
            return  # the views read live.latest when they are built
        with self.session.lock, self.ctx.lock, self.main_figure.batch_update():
            if event.generation != self.session.generation:
                return
            if event.kind == "result" and event.result is not None:
                self.errors.clear("evaluation")
                self.ctx.call("show the accuracy", self.accuracy.on_result, event.result)
                if event.result.final:
                    self.ctx.call("show what changed", self.changes.on_result, event.result)
            elif event.kind == "error":
                self.errors.show("evaluate the pruned model", event.error or "unknown error", source="evaluation")
                self.ctx.call("show the error", self.accuracy.on_error, event.error or "")
            self.ctx.call("update the headline", self.headline.render)
        with self.session.lock, self.ctx.lock:
            self.ctx.snapshot()

    def _on_rank_progress(self, stage: str, fraction: float) -> None:
        """A new criterion or scope on a big model: show the ranking's progress (and the status) as it goes."""
        self.progress_line.update(stage, fraction)
        self.status.set_busy("ranking", fraction < 1.0, "ranking the weights")

    def _tool_esm(self) -> str | None:
        """plotly's module for a figure a tool builds later: the URL the page imported it from, if any."""
        d = self._deferred
        return d.esm_url if d is not None and d.loaded else None

    def _send_figure_state(self, fig: Any) -> None:
        """Send ``fig``'s whole current state to the browser (before its plotly module loads: moves made while
        the placeholder showed were sent as updates nobody drew)."""
        with self.session.lock, self.ctx.lock:
            self.ctx.snapshot()
            fig.send_state(["_widget_data", "_widget_layout"])

    def _on_flops(self) -> None:
        self.headline.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        with self.session.lock, self.ctx.lock:
            self.ctx.snapshot()
        return super()._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ public
    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until evaluation and FLOPs counting are done for the current plan (for scripts and tests)."""
        ok = self.live.wait_idle(timeout) if self.live is not None else True
        return self.summary.wait_idle(timeout) and self.actual.wait_idle(timeout) and ok

    def _stop(self) -> None:
        """Unsubscribe from the session and the evaluator; stop the evaluator and the FLOPs thread."""
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("unsubscribe failed", exc_info=True)
        self._unsubscribe.clear()
        tools = getattr(self, "tools", None)
        if tools is not None:
            for view in tools.views.values():
                view.close()  # cancels a running race or search
        if self.live is not None:
            self.live.close()
        summary = getattr(self, "summary", None)
        if summary is not None:
            summary.close()
        actual = getattr(self, "actual", None)
        if actual is not None:
            actual.stop()  # a measurement in flight ends at its next step

    def close(self) -> None:
        """Stop the live evaluator and the FLOPs thread, unsubscribe, and close every widget of the explorer."""
        self._stop()
        for child in self.children:
            _close_tree(child)
        _close_parts(self)
        super().close()


def _close_parts(w: widgets.Widget) -> None:
    for attr in ("layout", "style"):
        sub = getattr(w, attr, None)
        if isinstance(sub, widgets.Widget):
            sub.close()


def _close_tree(w: widgets.Widget) -> None:
    """Close ``w``, its children and their layout/style models (nothing stays in Widget.widgets)."""
    for child in getattr(w, "children", ()):
        _close_tree(child)
    _close_parts(w)
    w.close()


def _demo_defaults(model: nn.Module) -> tuple[Any, list[Batch], list[str], str] | None:
    """For a demo model: its test data, a few train batches for the gradient criteria, class names and a title
    (None for any other model)."""
    from ..data.demos import demo_defaults

    return demo_defaults(model)


class _OpeningProgress:
    """While the explorer opens on a big model (seconds): a progress line in the cell's output, if in a kernel."""

    def __init__(self, model: Any) -> None:
        self.line: ProgressLine | None = None
        base = model.model if isinstance(model, PruningSession) else model
        n = sum(p.numel() for p in base.parameters()) if isinstance(base, nn.Module) else 0
        if n < PROGRESS_MIN:
            return
        try:
            from IPython import get_ipython
            from IPython.display import display

            if getattr(get_ipython(), "kernel", None) is None:
                return
            self.line = ProgressLine()
            display(self.line)
            self.update("ranking the weights", 0.05)
        except Exception:  # noqa: BLE001 - no kernel, no progress line
            self.line = None

    def update(self, stage: str, fraction: float) -> None:
        if self.line is not None:
            self.line.update(f"opening: {stage}" if stage else "opening", min(fraction, 0.99))

    def close(self) -> None:
        # hidden, not closed: the cell's output still points at it, and a closed widget there shows as "Error
        # displaying widget: model not found" above the explorer (seen in Voila)
        if self.line is not None:
            self.line.update("", 1.0)
            self.line = None


def _first_sample(data: Any) -> Any:
    """One sample of ``data``'s inputs (structured scope couples residual-tied layers with it), or None."""
    if data is None:
        return None
    from ..core.batches import first_input

    try:
        return first_input(data, 1)
    except Exception:  # noqa: BLE001 - bad data is reported by the evaluator with a clear message
        return None


def _output_head(model: nn.Module, data: Any) -> list[str]:
    """The model's output layers (see :func:`pruneviz.core.graph.output_layers`) on one sample of ``data``."""
    from ..core.batches import first_input
    from ..core.graph import output_layers
    from ..core.targets import find_targets

    try:
        return output_layers(model, first_input(data, 1), find_targets(model))
    except Exception:  # noqa: BLE001 - bad data is reported by the evaluator with a clear message
        return []


def explore(
    model: nn.Module | PruningSession | str | None = None,
    data: Any = None,
    *,
    criterion: str = "magnitude",
    scope: str = "global",
    task: str | Any = "auto",
    output: Any = None,
    protect: Sequence[str] | None = None,
    embeddings: bool = False,
    show: str | None = None,
    sample_text: Any = None,
    feature_names: Sequence[str] | None = None,
    calib_data: Any = None,
    exports: str = "folder",
    class_names: Sequence[str] | None = None,
    example_input: torch.Tensor | None = None,
    subset_size: int | None = None,
    title: str | None = None,
    seed: int = 0,
    defer_plots: bool = False,
    plotly_bundle: str | None = None,
    **live_options: Any,
) -> Explorer:
    """Open the pruning explorer.

    ``model``: your ``nn.Module`` (or a ready ``PruningSession``); None or "cnn"/"mlp" opens the embedded
    demo on the digits test split (so does a demo model passed without data). ``data``: evaluation data,
    ``(inputs, labels)`` tensors, a Dataset or a DataLoader (None: no live accuracy). ``calib_data``: a few
    ``(inputs, labels)`` batches for the gradient criteria (saliency, Taylor). ``example_input``: for
    FLOPs (default: one sample of ``data``). ``subset_size``: evaluate on a fixed stratified subset of this
    many samples. ``class_names``: labels for the per-class bars and the gallery. Other keyword arguments
    go to the live evaluator (``first_chunk``, ``chunk_size``, ...). ``defer_plots``: load plotly.js only once
    the page has rendered, so the controls are interactive sooner (the Voila app uses it); ``plotly_bundle``: with
    it, the path (beside the notebook, see ``publish_plotly_bundle``) of plotly's bundle for the browser to import
    by URL instead of receiving it over the websocket.

    >>> import pruneviz as pv
    >>> app = pv.explore()                      # the demo
    >>> app = pv.explore(my_model, (x, y))      # yours
    """
    if model is None or isinstance(model, str):
        from ..data import load_demo_model

        model = load_demo_model(model or "cnn")
    demo = _demo_defaults(model) if data is None and isinstance(model, nn.Module) else None
    if demo is not None:
        demo_data, demo_calib, demo_names, demo_title, options = demo
        data = demo_data
        calib_data = demo_calib if calib_data is None else calib_data
        class_names = demo_names if class_names is None else class_names
        title = demo_title if title is None else title
        embeddings = embeddings or options.get("embeddings", False)
        show = show or options.get("show")
        sample_text = sample_text if sample_text is not None else options.get("sample_text")
        feature_names = feature_names if feature_names is not None else options.get("feature_names")
        subset_size = subset_size if subset_size is not None else options.get("subset_size")
    opening = _OpeningProgress(model)
    if isinstance(model, PruningSession):
        session = model
    else:
        if protect is None and data is not None:
            protect = _output_head(model, data) or None
        coupling_input = example_input if example_input is not None else _first_sample(data)
        session = PruningSession(model, criterion=criterion, scope=scope, calib_data=calib_data, seed=seed,
                                 task=task, protect=protect, embeddings=embeddings, progress=opening.update,
                                 example_input=coupling_input)
    opening.update("measuring the unpruned model", 0.6)
    live_options = {"task": task, "output": output, **live_options}
    if show is not None and show not in SHOW:
        from ..core.errors import PrunevizError

        raise PrunevizError(f"show={show!r}: choose one of {', '.join(SHOW)} (how the gallery draws a sample).")
    hints = {"show": show, "sample_text": sample_text, "feature_names": feature_names}
    try:
        return Explorer(session, data, class_names=class_names, example_input=example_input,
                        subset_size=subset_size, title=title, live_options=live_options, defer_plots=defer_plots,
                        plotly_bundle=plotly_bundle, hints=hints, exports=exports)
    finally:
        opening.close()
