"""The explorer's tools: "Compare criteria" (the criterion race) and "Find a plan" (a plan from a budget).

Each tool has a FigureWidget of its own, and a FigureWidget costs the page ~5 MB of plotly.js when it arrives
inline: so a tool is built only when its button is first pressed, and in the app its figure takes the
plotly module the page already imported by URL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .base import ViewContext

TOOLS = (("Compare criteria", "compare"), ("Find a plan", "plan"))


class ToolsPanel(widgets.VBox):
    """Two buttons (``buttons`` by key, classes ``pv-tool-compare`` / ``pv-tool-plan``) and the tool shown
    (``views`` by key once built)."""

    def __init__(self, ctx: ViewContext, esm_url: Callable[[], str | None] = lambda: None) -> None:
        self.ctx = ctx
        self._esm_url = esm_url
        self.views: dict[str, Any] = {}
        self.buttons: dict[str, widgets.ToggleButton] = {}
        for label, key in TOOLS:
            b = widgets.ToggleButton(value=False, description=label, icon="bar-chart" if key == "compare" else "search",
                                     layout=widgets.Layout(width="190px", min_width="190px"))
            b.add_class(f"pv-tool-{key}")
            b.observe(ctx.guard(f"open {label.lower()}")(lambda change, k=key: self._toggle(k, change["new"])),
                      "value")
            self.buttons[key] = b
        self.slot = widgets.VBox()
        help_ = widgets.HTML('<span class="pv-help">Race every criterion over a grid of sparsities, or let '
                             "pruneviz search a per-layer plan that stays within a tolerance; your plan stays as "
                             "it is until you apply a found one.</span>")
        super().__init__([widgets.HTML('<div class="pv-section">Compare and plan</div>'),
                          widgets.HBox([*self.buttons.values(), help_]), self.slot])
        self.add_class("pv-tools")

    def _build(self, key: str) -> Any:
        if key == "compare":
            from .compare import CompareView

            view = CompareView(self.ctx)
        else:
            from .plan_view import PlanFinderView

            view = PlanFinderView(self.ctx)
        url = self._esm_url()
        if url:  # the app: plotly.js is already imported by URL, the figure need not carry it
            view.figure._esm = url
        return view

    def _toggle(self, key: str, on: bool) -> None:
        if on:
            for other, b in self.buttons.items():
                if other != key and b.value:
                    b.value = False
            if key not in self.views:
                self.views[key] = self._build(key)
            self.slot.children = (self.views[key],)
        elif self.slot.children and self.slot.children[0] is self.views.get(key):
            self.slot.children = ()

    def close(self) -> None:
        for view in self.views.values():
            view.close()
        super().close()
