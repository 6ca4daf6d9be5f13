"""Fixtures for the widget tests: explorers that are always closed.

No kernel and no browser: ipywidgets falls back to a dummy comm, so widgets are plain Python objects.
"""

from __future__ import annotations

import warnings

import pytest

import pruneviz as pv
from pruneviz.widgets import Explorer

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def make_explorer():
    """``make_explorer(*args, **kwargs)`` -> ``pv.explore(...)``, closed after the test."""
    made: list[Explorer] = []

    def make(*args, **kwargs) -> Explorer:
        app = pv.explore(*args, **kwargs)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def demo(make_explorer) -> Explorer:
    """The default explorer (demo CNN on the digits test split), idle."""
    app = make_explorer()
    assert app.wait_idle(30)
    return app
