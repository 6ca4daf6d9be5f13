"""ErrorArea: where every error from a callback or the evaluator is shown in plain words (no traceback)."""

from __future__ import annotations

import threading

import ipywidgets as widgets

from .base import describe_error, esc


class ErrorArea(widgets.HTML):
    """An HTML box (CSS class ``pv-error``) hidden while there is nothing to show.

    Messages are kept per ``source`` ("action", "evaluation", ...) so that, e.g., a successful evaluation
    clears an evaluation error without hiding an unrelated export error.
    """

    def __init__(self) -> None:
        super().__init__(value="")
        self.add_class("pv-error")
        self.layout.display = "none"
        self._messages: dict[str, str] = {}
        self._lock = threading.RLock()

    @property
    def messages(self) -> dict[str, str]:
        """The messages shown now, by source."""
        return dict(self._messages)

    @property
    def text(self) -> str:
        """All messages shown now, as plain text (empty when the area is hidden)."""
        return " ".join(self._messages.values())

    def show(self, where: str, error: BaseException | str, source: str = "action") -> None:
        """Show ``error`` as 'Could not <where>: <message>'."""
        with self._lock:
            msg = describe_error(error)
            self._messages[source] = f"Could not {where}: {msg}" if where else msg
            self._render()

    def clear(self, source: str | None = None) -> None:
        """Remove the message of ``source`` (all messages if None)."""
        with self._lock:
            if source is None:
                self._messages.clear()
            elif self._messages.pop(source, None) is None:
                return
            self._render()

    def _render(self) -> None:
        if not self._messages:
            self.value = ""
            self.layout.display = "none"
            return
        items = "".join(f"<div>⚠ {esc(m)}</div>" for m in self._messages.values())
        self.value = items
        self.layout.display = None
