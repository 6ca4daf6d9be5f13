"""pruneviz: see and feel neural-network pruning.

>>> import pruneviz as pv
>>> session = pv.PruningSession(model, scope="global")
>>> session.set_global_sparsity(0.8)
"""

from .core import *  # noqa: F403
from .core import _LAZY as _core_lazy
from .core import __all__ as _core_all
from .core import __getattr__ as _core_getattr

__version__ = "0.1.0"
__all__ = [*_core_all, *_core_lazy, "dashboard"]


def dashboard(*args, **kwargs):
    """The Voila app's widget: a model picker over the explorer (imports ipywidgets on first use)."""
    from .app.dashboard import dashboard as _dashboard

    return _dashboard(*args, **kwargs)


def explore(*args, **kwargs):
    """Open the interactive pruning explorer (imports ipywidgets/plotly on first use).

    See :func:`pruneviz.widgets.explorer.explore`: ``pv.explore()`` for the demo, ``pv.explore(model, (x, y))``.
    """
    from .widgets.explorer import explore as _explore

    return _explore(*args, **kwargs)


__all__.append("explore")


def __getattr__(name: str):
    """The core's heavy names (slim, export_onnx, criterion_race, ...) load on first use."""
    return _core_getattr(name)
