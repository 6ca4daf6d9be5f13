"""The app's figures wait on a placeholder module until the browser reports the page drawn."""

import pruneviz as pv
from pruneviz.widgets.deferred import PLACEHOLDER_ESM


def test_plotly_module_is_sent_only_after_the_page_rendered():
    app = pv.explore("cnn", defer_plots=True)
    app._deferred.stagger_s = 0  # load both at once here
    try:
        figures = (app.main_figure, app.filter_figure)
        assert all(f._esm == PLACEHOLDER_ESM for f in figures)
        ready = app._deferred.widget
        assert ready in app.children
        ready._on_msg(ready, {"event": "something else"}, [])
        assert all(f._esm == PLACEHOLDER_ESM for f in figures)
        ready._on_msg(ready, {"event": "rendered"}, [])
        assert all(len(f._esm) > 1_000_000 for f in figures)  # plotly.js itself
        app.session.set_global_sparsity(0.5)  # the views keep working throughout
        assert app.wait_idle(30)
    finally:
        app.close()


def test_figures_load_one_after_another():
    import time

    app = pv.explore("cnn", defer_plots=True)
    app._deferred.stagger_s = 0.2
    try:
        app._deferred.load()
        assert len(app.main_figure._esm) > 1_000_000 and app.filter_figure._esm == PLACEHOLDER_ESM
        deadline = time.monotonic() + 10
        while app.filter_figure._esm == PLACEHOLDER_ESM and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(app.filter_figure._esm) > 1_000_000
    finally:
        app.close()


def test_plots_are_not_deferred_by_default():
    app = pv.explore("mlp")
    try:
        assert app._deferred is None and len(app.main_figure._esm) > 1_000_000
    finally:
        app.close()
