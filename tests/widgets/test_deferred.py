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


def test_figures_import_the_served_bundle_by_url(tmp_path):
    from pruneviz.widgets.deferred import BUNDLE_NAME, publish_plotly_bundle

    path = publish_plotly_bundle(tmp_path)
    assert path == f"_static/{BUNDLE_NAME}"
    served = tmp_path / path
    assert served.stat().st_size > 1_000_000 and served.stat().st_mode & 0o044  # readable by the server
    app = pv.explore("cnn", defer_plots=True, plotly_bundle=path)
    app._deferred.stagger_s = 0
    try:
        ready = app._deferred.widget
        assert ready.bundle == path  # the browser looks for this file under voila/files/
        url = f"http://127.0.0.1:8866/voila/files/{path}?v=1"
        ready._on_msg(ready, {"event": "rendered", "esm_url": url}, [])
        assert app.main_figure._esm == url and app.filter_figure._esm == url  # 5 MB less per figure
    finally:
        app.close()


def test_a_bundle_the_browser_could_not_load_falls_back_to_inline():
    bundle = "_static/plotly-widget-1.0.js"
    for bad in (None, 42, "javascript:alert(1)", "http://evil.example/other.js",
                f"http://evil.example/{bundle}?v=1",  # not under voila/files/
                f"http://evil.example/x.js#/voila/files/{bundle}",  # a fragment hiding the real path
                f"http://user:pw@127.0.0.1/voila/files/{bundle}?v=1",
                f"http://127.0.0.1/voila/files/../{bundle}?v=1",
                f"http://127.0.0.1/voila/files/{bundle}",  # no cache query
                f"http://127.0.0.1/voila/files/{bundle}?v=1&x=2"):
        app = pv.explore("mlp", defer_plots=True, plotly_bundle=bundle)
        app._deferred.stagger_s = 0
        try:
            ready = app._deferred.widget
            ready._on_msg(ready, {"event": "rendered", "esm_url": bad}, [])
            assert len(app.main_figure._esm) > 1_000_000, bad
        finally:
            app.close()


def test_publishing_is_done_once_and_survives_a_read_only_folder(tmp_path):
    from pruneviz.widgets.deferred import publish_plotly_bundle

    path = publish_plotly_bundle(tmp_path)
    before = (tmp_path / path).stat().st_mtime_ns
    assert publish_plotly_bundle(tmp_path) == path and (tmp_path / path).stat().st_mtime_ns == before
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("user data")
    assert publish_plotly_bundle(blocked) is None  # logged; the plots then carry plotly inline
    assert blocked.read_text() == "user data"


def test_bundle_urls_follow_voilas_base_url_and_subfolders():
    from pruneviz.widgets.deferred import bundle_url_ok

    b = "_static/plotly-widget-7.1.0.js"
    assert bundle_url_ok(f"http://127.0.0.1:8866/voila/files/{b}?v=1", b)
    assert bundle_url_ok(f"https://host/voila/files/lessons/{b}?v=1", b)  # tree mode, a notebook in a subfolder
    assert bundle_url_ok(f"https://host/user/ann/voila/files/{b}?v=1", b, base_url="/user/ann/")
    assert not bundle_url_ok(f"https://host/voila/files/{b}?v=1", b, base_url="/user/ann/")


def test_the_dashboard_publishes_the_bundle_only_under_voila(tmp_path, monkeypatch):
    from pruneviz.app.dashboard import Dashboard

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOILA_BASE_URL", raising=False)
    app = Dashboard(models=("mlp",), initial="mlp")
    try:
        assert app._bundle is None and not (tmp_path / "_static").exists()  # a notebook or script: nothing written
    finally:
        app.close_all()
    monkeypatch.setenv("VOILA_BASE_URL", "/")
    app = Dashboard(models=("mlp",), initial="mlp")
    try:
        assert app._bundle and (tmp_path / app._bundle).is_file()
        assert app.explorers["mlp"]._deferred.widget.bundle == app._bundle
    finally:
        app.close_all()
