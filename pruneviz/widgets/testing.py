"""Helpers for tests and benchmarks: count live widgets and measure what goes to the front end."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
from ipywidgets.widgets import widget as _widget_module


def live_widget_count() -> int:
    """How many widgets are alive (what ``ipywidgets.Widget.widgets`` holds)."""
    return len(_widget_module._instances)


def _nbytes(buf: Any) -> int:
    return memoryview(buf).nbytes


def message_size(data: Any, buffers: Any = None) -> int:
    """Bytes of one comm message as sent: its JSON plus its binary buffers."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    return len(text.encode()) + sum(_nbytes(b) for b in (buffers or ()))


@dataclass
class Traffic:
    """What was sent while recording: one entry (model class name, bytes) per message; with ``keep``, the
    messages' JSON text too (in ``texts``)."""

    messages: list[tuple[str, int]] = field(default_factory=list)
    keep: bool = False
    texts: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.messages)

    def by_widget(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, n in self.messages:
            out[name] = out.get(name, 0) + n
        return out

    def clear(self) -> None:
        self.messages.clear()


class RecordingComm:
    """Stands in for a widget's comm: records the serialized size of every message, sends nothing."""

    def __init__(self, inner: Any, owner: str, traffic: Traffic) -> None:
        self.inner = inner
        self.comm_id = inner.comm_id
        self.kernel = True  # ipywidgets only sends through a comm whose kernel is not None
        self._owner = owner
        self._traffic = traffic

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self._traffic.messages.append((self._owner, message_size(data, buffers)))
        if self._traffic.keep:
            self._traffic.texts.append(json.dumps(data, default=str))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.contextmanager
def record_traffic(keep: bool = False) -> Iterator[Traffic]:
    """Replace every live widget's comm with a :class:`RecordingComm` while the block runs (``keep``: keep
    each message's JSON text as well)."""
    traffic = Traffic(keep=keep)
    swapped: list[tuple[widgets.Widget, Any]] = []
    for w in list(_widget_module._instances.values()):
        if w.comm is not None and not isinstance(w.comm, RecordingComm):
            inner = w.comm
            w.comm = RecordingComm(inner, type(w).__name__, traffic)
            swapped.append((w, inner))
    try:
        yield traffic
    finally:
        for w, inner in swapped:
            if w.comm is not None:
                w.comm = inner
