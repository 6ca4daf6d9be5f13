"""Load plotly.js after the page is interactive.

Every plotly ``FigureWidget`` ships the whole plotly.js bundle (~5 MB) as its anywidget module, and the
browser evaluates it before the page becomes interactive: about 1 s per figure on a 2-core laptop, on top
of Voila's own ~2 s. So the app builds its figures with a tiny placeholder module, and a small widget that
reports "rendered" from the browser swaps the real module in. anywidget reloads a widget's module when
``_esm`` changes and draws the figure from the state it already holds: the sliders work at once and the
plots follow about a second later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import anywidget
import plotly.graph_objects as go
import traitlets

log = logging.getLogger(__name__)

PLACEHOLDER_ESM = """
export default {
  render({ el }) {
    const note = document.createElement("div");
    note.className = "pv-plot-loading";
    note.textContent = "loading the plots…";
    el.appendChild(note);
    return () => note.remove();  // anywidget calls this before it draws with the real module
  }
};
"""


class PageReady(anywidget.AnyWidget):
    """Sends one message to the kernel when the browser has drawn it (class ``pv-page-ready``)."""

    _esm = """
export default {
  render({ model }) {
    // ask for plotly.js when the browser is idle after drawing the page, not in the middle of it
    const send = () => model.send({ event: "rendered" });
    if (window.requestIdleCallback) { window.requestIdleCallback(send, { timeout: 1500 }); } else { setTimeout(send, 300); }
  }
};
"""
    rendered = traitlets.Bool(False).tag(sync=False)

    def __init__(self, on_rendered: Callable[[], None]) -> None:
        super().__init__(layout={"width": "0px", "height": "0px", "overflow": "hidden"})
        self.add_class("pv-page-ready")
        self._callback = on_rendered
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: object, content: dict, _buffers: object) -> None:
        if isinstance(content, dict) and content.get("event") == "rendered" and not self.rendered:
            self.rendered = True
            self._callback()


class DeferredPlotly:
    """Holds figures on the placeholder module until :meth:`load` (called once the page has rendered).

    The figures load one after another, ``stagger_s`` apart, so the browser evaluates one bundle at a time
    and a slider press never waits behind more than one (~1 s here) instead of all of them.
    """

    def __init__(self, figures: Sequence[go.FigureWidget], stagger_s: float = 1.5) -> None:
        self.stagger_s = stagger_s
        self._real = [(fig, fig._esm) for fig in figures]
        for fig in figures:
            fig._esm = PLACEHOLDER_ESM
        self.loaded = False
        self.widget = PageReady(self.load)

    def load(self) -> None:
        """Send each figure its real plotly.js module (the browser then draws it)."""
        if self.loaded:
            return
        self.loaded = True
        self._load_next(list(self._real))

    def _load_next(self, pending: list) -> None:
        if not pending:
            return
        fig, esm = pending.pop(0)
        try:
            fig._esm = esm
        except Exception:  # noqa: BLE001 - a figure closed meanwhile
            log.debug("could not load plotly for a figure", exc_info=True)
        if pending:
            if self.stagger_s <= 0:
                self._load_next(pending)
            else:
                timer = threading.Timer(self.stagger_s, self._load_next, args=(pending,))
                timer.daemon = True
                timer.start()
