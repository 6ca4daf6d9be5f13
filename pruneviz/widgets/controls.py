"""Controls: criterion, scope, the global slider, per-layer sliders, undo/redo/reset and export.

Controls only call session methods; :meth:`Controls.on_session` writes the session's plan back into them
(with their observers muted), so a change made anywhere (global slider, undo, code) shows everywhere
without feedback loops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ipywidgets as widgets

from ..core import CRITERIA, SessionEvent, get_criterion
from .base import SCOPE_HELP, SCOPE_LABELS, ViewContext, esc, fmt_count, shape_text, short_name
from .export import ExportPanel

#: slider readouts in whole percent (the "%" sign is appended by CSS)
PCT_FORMAT = ".0f"


def _full() -> widgets.Layout:
    return widgets.Layout(width="100%")


def _pct(fraction: float) -> float:
    """A sparsity fraction as the percent a slider shows (rounded so 0.29 gives 29.0, not 28.999...)."""
    return round(100 * float(fraction), 6)




class Controls(widgets.VBox):
    """The left-hand panel. Parts: ``criterion``, ``scope``, ``global_slider`` and ``layer_sliders`` (by tensor
    name; both in percent), ``undo_button``, ``redo_button``, ``reset_button``, ``export_path``, ``export_form``,
    ``save_recipe_button``, ``save_model_button``, ``export_result``."""

    def __init__(self, ctx: ViewContext, *, has_calib: bool = True, export_mode: str = "folder",
                 export_name: str = "model") -> None:
        self.ctx = ctx
        s = ctx.session
        plan = s.plan
        self._mute = 0

        names = list(CRITERIA)
        if plan.criterion not in names:  # a custom Criterion object given to the session
            names.append(plan.criterion)
        options = []
        for name in names:
            crit = get_criterion(name) if name in CRITERIA else None
            label = crit.label if crit is not None else name
            if crit is not None and crit.needs_data and not has_calib:
                label += " (needs calib_data)"
            options.append((label, name))
        self.criterion = widgets.Dropdown(options=options, value=plan.criterion, description="Criterion",
                                          layout=_full(), style={"description_width": "64px"})
        self.criterion.add_class("pv-criterion")
        self.criterion_help = widgets.HTML(layout=_full())
        self.criterion_help.add_class("pv-help")

        self.scope = widgets.ToggleButtons(
            options=[(SCOPE_LABELS[sc], sc) for sc in ("global", "layer", "structured")], value=plan.scope,
            tooltips=["one threshold over all layers", "the same sparsity in every layer",
                      "remove whole output channels"],
            style={"button_width": "92px"},
        )
        self.scope.add_class("pv-scope")
        self.scope_help = widgets.HTML(layout=_full())
        self.scope_help.add_class("pv-help")

        # sliders count in percent (typing "40" in the readout means 40 %); CSS appends the "%" sign
        self.global_slider = widgets.FloatSlider(
            value=_pct(plan.global_sparsity), min=0.0, max=99.0, step=1.0, readout_format=PCT_FORMAT,
            continuous_update=False, description="Remove", layout=_full(), style={"description_width": "64px"},
            tooltip="share of the prunable weights to remove",
        )
        self.global_slider.add_class("pv-global-slider")

        self.undo_button = widgets.Button(description="Undo", icon="undo", tooltip="undo the last change",
                                          layout=widgets.Layout(width="32%"))
        self.redo_button = widgets.Button(description="Redo", icon="repeat", tooltip="redo",
                                          layout=widgets.Layout(width="32%"))
        self.reset_button = widgets.Button(description="Reset", icon="refresh", button_style="warning",
                                           tooltip="back to the original weights (undoable)",
                                           layout=widgets.Layout(width="32%"))
        for b, cls in ((self.undo_button, "pv-undo"), (self.redo_button, "pv-redo"), (self.reset_button, "pv-reset")):
            b.add_class(cls)

        self.layer_title = widgets.HTML()
        self.layer_sliders: dict[str, widgets.FloatSlider] = {}
        for i, t in enumerate(s.targets):
            slider = widgets.FloatSlider(
                value=0.0, min=0.0, max=100.0, step=1.0, readout_format=PCT_FORMAT, continuous_update=False,
                description=(f"<b>{esc(short_name(t))}</b> <span style='color:#6b7280'>{shape_text(t.shape)} · "
                             f"{fmt_count(t.numel)} weights</span>"),
                description_allow_html=True, tooltip=t.name,
                layout=widgets.Layout(width="98%"), style={"description_width": "initial"},
            )
            slider.add_class("pv-layer-slider")
            slider.add_class(f"pv-layer-{i}")
            slider.observe(self._layer_handler(t.name), "value")
            self.layer_sliders[t.name] = slider
        self.layer_box = widgets.VBox(
            list(self.layer_sliders.values()),
            layout=widgets.Layout(max_height="300px", overflow_y="auto", border="1px solid #e5e7eb",
                                  padding="4px 2px 4px 6px"),
        )

        self.export = ExportPanel(ctx, export_mode, export_name)

        resync = self._resync
        self.criterion.observe(ctx.guard("change the criterion", on_error=resync)(self._on_criterion), "value")
        self.scope.observe(ctx.guard("change the scope", on_error=resync)(self._on_scope), "value")
        self.global_slider.observe(ctx.guard("apply the global sparsity", on_error=resync)(self._on_global), "value")
        self.undo_button.on_click(ctx.guard("undo", on_error=resync)(lambda _: ctx.session.undo()))
        self.redo_button.on_click(ctx.guard("redo", on_error=resync)(lambda _: ctx.session.redo()))
        self.reset_button.on_click(ctx.guard("reset", on_error=resync)(lambda _: ctx.session.reset()))

        def section(text: str) -> widgets.HTML:
            w = widgets.HTML(f'<div class="pv-section">{esc(text)}</div>')
            return w

        super().__init__(
            [
                section("How to choose what goes"),
                self.criterion, self.criterion_help,
                self.scope, self.scope_help,
                section("How much"),
                self.global_slider,
                widgets.HBox([self.undo_button, self.redo_button, self.reset_button], layout=_full()),
                self.layer_title, self.layer_box,
                section("Export"),
                self.export,
            ],
            layout=widgets.Layout(width="340px", min_width="300px", padding="0 12px 0 0"),
        )
        self.add_class("pv-controls")
        self.on_session(None)

    # ---------------------------------------------------------------- handlers
    @contextlib.contextmanager
    def _muted(self) -> Iterator[None]:
        self._mute += 1
        try:
            yield
        finally:
            self._mute -= 1

    def _on_criterion(self, change: dict) -> None:
        if not self._mute:
            self.ctx.session.set_criterion(change["new"])

    def _on_scope(self, change: dict) -> None:
        if not self._mute:
            self.ctx.session.set_scope(change["new"])

    def _on_global(self, change: dict) -> None:
        if not self._mute:
            self.ctx.session.set_global_sparsity(float(change["new"]) / 100)

    def _layer_handler(self, name: str):
        @self.ctx.guard(f"set the sparsity of {name}", on_error=self._resync)
        def handler(change: dict) -> None:
            if not self._mute:
                self.ctx.session.set_sparsity(name, float(change["new"]) / 100)

        return handler

    def _resync(self) -> None:
        with self.ctx.session.lock, self.ctx.lock:
            self.on_session(None)

    # ------------------------------------------------------------------ export (see export.py)
    @property
    def export_path(self) -> widgets.Text | None:
        return self.export.path

    @property
    def export_form(self) -> widgets.Dropdown:
        return self.export.form

    @property
    def save_recipe_button(self) -> widgets.Button:
        return self.export.recipe_button

    @property
    def save_model_button(self) -> widgets.Button:
        return self.export.model_button

    @property
    def export_result(self) -> widgets.HTML:
        return self.export.result

    # ------------------------------------------------------------------ render
    def on_session(self, event: SessionEvent | None) -> None:
        """Write the session's plan into the controls (observers muted: no feedback loop)."""
        s = self.ctx.session
        plan = s.plan
        with self._muted():
            if plan.criterion in {v for _, v in self.criterion.options}:
                self.criterion.value = plan.criterion
            self.scope.value = plan.scope
            self.global_slider.value = min(99.0, _pct(plan.global_sparsity))
            values = s.layer_sparsities() if plan.scope == "global" else plan.sparsity
            for name, slider in self.layer_sliders.items():
                slider.value = _pct(values.get(name, 0.0))
                slider.disabled = not s.supported(name)
            self.undo_button.disabled = not s.can_undo
            self.redo_button.disabled = not s.can_redo
        crit = get_criterion(plan.criterion) if plan.criterion in CRITERIA else None
        self.criterion_help.value = esc(crit.description) if crit is not None else ""
        self.scope_help.value = esc(SCOPE_HELP[plan.scope])
        what = {
            "global": "what the global threshold implies; moving one switches to per-layer scope",
            "layer": "% of each layer's weights",
            "structured": "% of each layer's output channels",
        }[plan.scope]
        self.layer_title.value = f'<div class="pv-section">Per layer <span class="pv-help">({esc(what)})</span></div>'
