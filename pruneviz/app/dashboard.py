"""The Voila dashboard: a model picker over the explorer, on the embedded digits data.

Each model's explorer is built once, on first use, and kept: switching back is instant and creates no new
widgets (Voila never garbage-collects widgets whose comm is alive).
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

import ipywidgets as W

from pruneviz.data.demos import DEMOS

log = logging.getLogger(__name__)

#: the demos the app offers, in the picker's order
APP_MODELS: tuple[str, ...] = ("cnn", "mlp", "detector", "text_gru", "text_transformer", "audio_cnn", "tabular_mlp")


class Dashboard(W.VBox):
    """Model picker + the explorer of the picked model."""

    def __init__(self, models: tuple[str, ...] = APP_MODELS, initial: str = "cnn",
                 static_dir: str | os.PathLike | None = None) -> None:
        from pruneviz.widgets.deferred import publish_plotly_bundle
        from pruneviz.widgets.explorer import explore

        self._explore = explore
        # Voila serves files beside the notebook (its kernels' working folder): the browser imports plotly from
        # there. Outside Voila (no VOILA_BASE_URL) nothing is written unless a folder is given.
        if static_dir is None and "VOILA_BASE_URL" in os.environ:
            static_dir = Path.cwd()
        self._bundle = publish_plotly_bundle(static_dir) if static_dir is not None else None
        self.explorers: dict[str, W.Widget] = {}
        self.picker = W.ToggleButtons(
            options=[(DEMOS[m].label if m in DEMOS else m, m) for m in models],
            value=initial,
            description="Model:",
            style={"button_width": "220px"},
        )
        self.picker.add_class("pv-model-picker")
        self.error = W.HTML(layout=W.Layout(display="none"))
        self.error.add_class("pv-app-error")
        self.slot = W.Box(layout=W.Layout(width="100%"))
        super().__init__([self.picker, self.error, self.slot], layout=W.Layout(width="100%"))
        self.add_class("pv-dashboard")
        self._show(initial)
        self.picker.observe(self._on_pick, names="value")

    def _explorer(self, name: str) -> W.Widget:
        if name not in self.explorers:
            # the demo model on the digits test split; plotly.js loads once the page is interactive
            self.explorers[name] = self._explore(name, defer_plots=True, plotly_bundle=self._bundle,
                                                 exports="download")
        return self.explorers[name]

    def _show(self, name: str) -> None:
        try:
            self.slot.children = (self._explorer(name),)
            self.error.value, self.error.layout.display = "", "none"
        except Exception as e:  # noqa: BLE001 - shown in the app, never as a traceback
            log.exception("pruneviz: could not open model %s", name)
            self.error.value = (
                f"<div class='pv-error-box'>Could not open the {html.escape(name)} model: "
                f"{html.escape(str(e))}</div>"
            )
            self.error.layout.display = ""

    def _on_pick(self, change: dict) -> None:
        self._show(change["new"])

    def close_all(self) -> None:
        for ex in self.explorers.values():
            close = getattr(ex, "close", None)
            if close is not None:
                close()


def dashboard(models: tuple[str, ...] = APP_MODELS, initial: str | None = None,
              static_dir: str | os.PathLike | None = None) -> Dashboard:
    """The app: pick an embedded model, prune it, watch accuracy, size and FLOPs.

    The first model shown is ``initial``, else the ``PRUNEVIZ_MODEL`` environment variable, else the first.
    ``static_dir`` (default under Voila: the working folder, which is the notebook's; elsewhere: none) receives
    a copy of plotly's bundle in ``_static/`` for the browser to import (allowlisted in ``notebooks/voila.json``).
    """
    initial = initial or os.environ.get("PRUNEVIZ_MODEL") or models[0]
    if initial not in models:
        initial = models[0]
    return Dashboard(models, initial, static_dir)
