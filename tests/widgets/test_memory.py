"""Memory stays flat over 10,000 explorer updates: no widget, figure update or result is kept per update."""

from __future__ import annotations

import gc
import tracemalloc

import ipywidgets as widgets
import psutil
import pytest

import pruneviz.core.session as session_module

pytestmark = pytest.mark.slow


def test_memory_is_flat_over_ten_thousand_updates(demo, monkeypatch):
    # the undo history keeps up to MAX_HISTORY plans by design (~300 bytes each): cap it, so it is full
    # after the warm-up and anything else that grew per update would show
    monkeypatch.setattr(session_module, "MAX_HISTORY", 200)
    app = demo
    slider = app.controls.global_slider
    values = [float(v) for v in range(0, 96, 3)]

    def updates(start: int, stop: int) -> None:
        for i in range(start, stop):
            slider.value = values[i % len(values)]

    updates(0, 1000)  # warm-up: every weight state's final result is cached once, the history is full
    assert app.wait_idle(60)
    gc.collect()
    proc = psutil.Process()
    rss0, widgets0 = proc.memory_info().rss, len(widgets.Widget.widgets)
    updates(1000, 8500)
    assert app.wait_idle(60)
    tracemalloc.start()  # Python's allocations over the last 1,500 updates (tracing slows every allocation)
    updates(8500, 9000)
    gc.collect()
    traced0, _ = tracemalloc.get_traced_memory()
    updates(9000, 10000)
    assert app.wait_idle(60)
    gc.collect()
    traced1, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = proc.memory_info().rss
    print(f"over 9,000 updates: RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MB; Python memory traced over the "
          f"last 1,000: {traced0 / 2**10:.0f} -> {traced1 / 2**10:.0f} KB")
    assert len(widgets.Widget.widgets) == widgets0  # no widget created per update
    assert traced1 - traced0 < 100 * 2**10  # < 100 bytes per update kept
    assert rss1 - rss0 < 64 * 2**20
    assert app.errors.text == ""
