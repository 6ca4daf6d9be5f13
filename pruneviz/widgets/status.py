"""StatusIndicator: a busy/idle dot with stable CSS classes (``pv-status`` + ``pv-busy``/``pv-idle``)."""

from __future__ import annotations

import threading

import ipywidgets as widgets

from .base import esc


class StatusIndicator(widgets.HTML):
    """Busy while any source (evaluation, FLOPs, ...) is busy; idle otherwise.

    The CSS classes are set with ``add_class``/``remove_class`` so browser tests can wait on
    ``.pv-status.pv-idle``.
    """

    def __init__(self) -> None:
        super().__init__(value="")
        self.add_class("pv-status")
        self._busy: dict[str, str] = {}
        self._lock = threading.RLock()
        self._state = ""
        self._render()

    @property
    def busy(self) -> bool:
        return bool(self._busy)

    def set_busy(self, source: str, busy: bool, text: str = "") -> None:
        """Mark ``source`` busy (with a short text such as 'evaluating') or done."""
        with self._lock:
            if busy:
                self._busy[source] = text or source
            else:
                self._busy.pop(source, None)
            self._render()

    def _render(self) -> None:
        state = "pv-busy" if self._busy else "pv-idle"
        if state != self._state:
            if self._state:
                self.remove_class(self._state)
            self.add_class(state)
            self._state = state
        text = ", ".join(dict.fromkeys(self._busy.values())) + "…" if self._busy else "ready"
        self.value = f'<span class="pv-dot">●</span> {esc(text)}'


class ProgressLine(widgets.HBox):
    """A progress bar with a line of text (class ``pv-progress-line``), hidden when nothing long is running.

    ``update(stage, fraction)`` shows it (a fraction of 1 hides it again); widget updates travel as they are
    made, so it moves while a handler is still running (ranking 86 M weights takes seconds).
    """

    def __init__(self) -> None:
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="160px"))
        self.label = widgets.HTML()
        super().__init__([self.bar, self.label], layout=widgets.Layout(display="none", align_items="center"))
        self.add_class("pv-progress-line")

    def update(self, stage: str, fraction: float) -> None:
        if fraction >= 1.0:
            self.layout.display = "none"
            return
        self.bar.value = float(fraction)
        self.label.value = f'<span class="pv-help">{esc(stage)}…</span>'
        self.layout.display = None
