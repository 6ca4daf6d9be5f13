"""The Voila app in a real browser (Debian's headless Chromium driven by Playwright)."""

from __future__ import annotations

import re
import time

import pytest
from harness import NOTEBOOKS, AppPage, VoilaServer

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ACCURACY = ".pv-dashboard .pv-accuracy"
HEADLINE = ".pv-dashboard .pv-headline"


def hist_signature(app: AppPage) -> str:
    """What the histogram draws now: its plotly traces' y values (pruned/kept counts)."""
    return app.page.evaluate(
        """() => { const el = document.querySelector('.pv-dashboard .pv-hist');
                   const gd = el && (el.data ? el : el.querySelector('.js-plotly-plot'));
                   return gd && gd.data ? JSON.stringify(gd.data.map(t => t.y && Array.from(t.y))) : ''; }"""
    )


def set_global_by_readout(app: AppPage, percent: int) -> None:
    app.set_slider(".pv-global-slider", percent)


def wait_text_change(app: AppPage, selector: str, before: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = app.text(selector)
        if now != before:
            return now
        time.sleep(0.05)
    raise AssertionError(f"{selector} stayed {before!r} for {timeout} s")


def test_page_loads_with_controls_plots_and_no_errors(browser, voila_server):
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        for sel in (".pv-criterion", ".pv-scope", ".pv-global-slider",
                    ".pv-headline", ".pv-accuracy", ".pv-model-picker"):
            assert page.locator(f".pv-dashboard {sel}").first.is_visible(), sel
        assert "%" in app.text(ACCURACY)
        assert not app.app_errors()
        assert not app.errors, app.errors
        body = page.inner_text("body")
        assert "Traceback" not in body and "<pruneviz" not in body and "object at 0x" not in body
        app.wait_plots()  # plotly.js follows the interactive page
        for sel in (".pv-hist .main-svg", ".pv-filters .main-svg"):
            assert page.locator(f".pv-dashboard {sel}").first.is_visible(), sel
        assert not app.errors, app.errors
        # plotly.js came once as a file Voila serves, not as 5 MB per figure over the websocket
        assert any(status == 200 and "/_static/plotly-widget-" in url for status, url in app.files), app.files
        assert app.ws_bytes < 2e6, app.ws_bytes
        app.screenshot("app-loaded.png")
    finally:
        app.close()


def test_global_slider_by_keyboard_and_readout(browser, voila_server):
    app = AppPage(browser, voila_server.url)
    try:
        app.wait_plots()  # the histogram draws once the page has been left alone for a second
        acc0, head0, hist0 = app.text(ACCURACY), app.text(HEADLINE), hist_signature(app)
        assert hist0
        handle = app.page.locator(".pv-dashboard .pv-global-slider .noUi-handle").first
        handle.focus()
        for _ in range(5):
            handle.press("ArrowRight")
        app.page.wait_for_function(
            "() => document.querySelector('.pv-dashboard .pv-global-slider .noUi-handle')"
            ".getAttribute('aria-valuenow') !== '0.0'"
        )
        set_global_by_readout(app, 85)
        acc1 = wait_text_change(app, ACCURACY, acc0)
        app.wait_idle()
        acc1 = app.text(ACCURACY)
        assert acc1 != acc0
        assert hist_signature(app) != hist0
        head1 = app.text(HEADLINE)
        assert head1 != head0 and re.search(r"\b85\s?% of weights removed", head1), head1
        assert not app.app_errors() and not app.errors
        app.wait_plots()
        app.screenshot("app-pruned.png")
    finally:
        app.close()


def test_criterion_scope_undo_and_reset(browser, voila_server):
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        original = app.text(ACCURACY)
        set_global_by_readout(app, 70)
        wait_text_change(app, ACCURACY, original)
        app.wait_idle()
        magnitude_70 = app.text(ACCURACY)
        page.locator(".pv-dashboard .pv-criterion select").first.select_option(label="Random (baseline)")
        app.wait_idle()
        wait_text_change(app, ACCURACY, magnitude_70)
        page.locator(".pv-dashboard .pv-scope button", has_text=re.compile("structured", re.I)).first.click()
        app.wait_idle()
        assert not app.app_errors()
        for _ in range(2):  # back through scope and criterion to magnitude at 70 %
            page.locator(".pv-dashboard .pv-undo").first.click()
            app.wait_idle()
        deadline = time.monotonic() + 30
        while app.text(ACCURACY) != magnitude_70 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.text(ACCURACY) == magnitude_70
        page.locator(".pv-dashboard .pv-reset").first.click()
        app.wait_idle()
        deadline = time.monotonic() + 30
        while app.text(ACCURACY) != original and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.text(ACCURACY) == original
        assert not app.app_errors() and not app.errors
    finally:
        app.close()


def test_model_picker_switches_to_the_mlp(browser, voila_server):
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        page.locator(".pv-dashboard .pv-model-picker button", has_text="MLP").first.click()
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.pv-dashboard .pv-layer-slider'))"
            ".some(e => e.innerText.includes('fc1'))"
        )
        app.wait_idle()
        assert "%" in app.text(ACCURACY)
        app.wait_plots()  # the MLP's own figures load too
        assert not app.app_errors() and not app.errors
        app.screenshot("app-mlp.png")
    finally:
        app.close()


def test_an_error_shows_in_plain_words_and_the_app_stays_usable(browser, voila_server):
    """BN-scale on the MLP (it has no BatchNorm): the criterion cannot run; the app says so and keeps working."""
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        page.locator(".pv-dashboard .pv-model-picker button", has_text="MLP").first.click()
        page.wait_for_function("() => Array.from(document.querySelectorAll('.pv-dashboard .pv-layer-slider'))"
                               ".some(e => e.innerText.includes('fc1'))")
        app.wait_idle()
        page.locator(".pv-dashboard .pv-criterion select").first.select_option(label="BN scale |gamma| (slimming)")
        page.wait_for_function("() => { const e = document.querySelector('.pv-dashboard .pv-error');"
                               " return e && e.offsetParent !== null && e.innerText.includes('BatchNorm'); }")
        message = app.app_errors()
        assert "Could not change the criterion" in message and "l1_filter" in message, message
        assert "Traceback" not in page.inner_text("body") and "Error:" not in message
        app.screenshot("app-error.png")
        head0 = app.text(HEADLINE)  # the app still works, on the criterion it had
        handle = page.locator(".pv-dashboard .pv-global-slider .noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        wait_text_change(app, HEADLINE, head0)
        assert not app.errors, app.errors
    finally:
        app.close()


def test_exports_are_browser_downloads_and_nothing_lands_on_the_server(browser, voila_server, tmp_path):
    """No path box in the app: the recipe and the model come to the visitor's browser; the server's folder
    holds exactly the same files afterwards."""
    import json

    import torch

    listing = sorted(p.name for p in NOTEBOOKS.rglob("*") if "_static" not in p.parts)
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        assert page.locator(".pv-dashboard .pv-export-path").count() == 0
        set_global_by_readout(app, 60)
        app.wait_idle()
        with page.expect_download() as info:
            page.locator(".pv-dashboard .pv-save-recipe").first.click()
        recipe = tmp_path / info.value.suggested_filename
        info.value.save_as(recipe)
        assert recipe.name == "pruneviz-recipe-DigitsCNN.json"
        data = json.loads(recipe.read_text())
        assert data["format"] == "pruneviz-recipe" and data["plan"]["global_sparsity"] == 0.6
        with page.expect_download() as info:
            page.locator(".pv-dashboard .pv-save-model").first.click()
        model = tmp_path / info.value.suggested_filename
        info.value.save_as(model)
        state = torch.load(model, weights_only=True)
        assert "features.0.weight_orig" in state and "features.0.weight_mask" in state
        assert "downloaded as" in app.text(".pv-dashboard .pv-export-result")
        assert not app.app_errors() and not app.errors
    finally:
        app.close()
    assert sorted(p.name for p in NOTEBOOKS.rglob("*") if "_static" not in p.parts) == listing


def test_ten_loads_in_a_row_without_hang_or_kernel_pile_up(browser):
    """Ten loads, each to interactive (a hang fails the wait). The kernels of closed pages are culled once
    idle and disconnected (voila.json culls after 60 s; here after 10 s to keep the test short)."""
    server = VoilaServer("dashboard.ipynb", "--MappingKernelManager.cull_idle_timeout=10",
                         "--MappingKernelManager.cull_interval=5")
    try:
        times = []
        for _ in range(10):
            app = AppPage(browser, server.url, timeout_ms=60_000)
            times.append(app.load_s)
            assert not app.app_errors() and not app.errors
            app.close()
        print("load times (s):", [round(t, 1) for t in times])
        deadline = time.monotonic() + 60
        while len(server.kernel_pids()) > 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(server.kernel_pids()) <= 2, server.kernel_pids()  # the preheated pool (1) and at most one more
    finally:
        server.stop()


def test_plots_fall_back_to_inline_when_the_bundle_is_not_served(browser):
    """Another Voila configuration (no allowlisted _static/): the browser reports no URL, plotly comes inline."""
    server = VoilaServer("dashboard.ipynb", "--VoilaConfiguration.preheat_kernel=False",
                         "--VoilaConfiguration.file_allowlist=['.*\\.png']")
    try:
        app = AppPage(browser, server.url)
        try:
            app.wait_plots()
            assert any(status == 403 and "/_static/plotly-widget-" in url for status, url in app.files), app.files
            assert app.ws_bytes > 4e6  # the bundle travelled over the websocket instead
            assert not app.app_errors() and not app.errors, app.errors
        finally:
            app.close()
    finally:
        server.stop()
