"""What you actually get, in the Voila app in a real browser: measure the smaller model, re-calibrate BatchNorm and
undo it, download the smaller model and reload it in a fresh process (plain data, weights_only=True)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from harness import ROOT, AppPage

pytestmark = [pytest.mark.ui, pytest.mark.slow]

PANEL = ".pv-dashboard .pv-actual"
ACCURACY = ".pv-dashboard .pv-accuracy"


def wait_for(app: AppPage, fn, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def times(app: AppPage) -> dict[tuple[str, int], float]:
    """The panel's measured latencies: (form, batch size) -> median ms."""
    cells = app.page.eval_on_selector_all(
        f"{PANEL} .pv-actual-table td.pv-time",
        "els => els.map(e => [e.dataset.form, Number(e.dataset.batch), Number(e.dataset.ms)])")
    return {(f, b): ms for f, b, ms in cells}


def measure(app: AppPage) -> dict[tuple[str, int], float]:
    before = app.text(f"{PANEL} .pv-actual-table")
    app.page.locator(f"{PANEL} .pv-actual-measure").first.click()
    wait_for(app, lambda: app.text(f"{PANEL} .pv-actual-table") != before and "fewer MACs" in app.text(
        f"{PANEL} .pv-actual-table"), "the measurement")
    app.wait_idle()
    return times(app)


def test_measure_recalibrate_and_download_the_smaller_model(browser, voila_server, tmp_path):
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        assert "Masks alone save nothing on a CPU" in app.text(PANEL)
        page.locator(".pv-dashboard .pv-scope button", has_text=re.compile("structured", re.I)).first.click()
        app.wait_idle()
        app.set_slider(".pv-global-slider", 50)
        app.wait_idle()
        page.locator(f"{PANEL} .pv-actual-batch select").first.select_option(label="32")
        got = measure(app)
        if not got[("removed", 32)] < got[("dense", 32)]:  # a burst of load on the shared machine: once more
            got = measure(app)
        assert set(got) == {(f, b) for f in ("dense", "masked", "removed", "onnx") for b in (1, 32)}, got
        assert got[("removed", 32)] < got[("dense", 32)], got
        table = app.text(f"{PANEL} .pv-actual-table")
        assert re.search(r"FLOPs ×0\.\d\d", table) and "fewer MACs: they differ" in table, table
        assert "1 thread" in table and "channels removed" in table and "ONNX Runtime" in table
        app.wait_plots()
        app.screenshot("app-actual.png")

        # re-calibrate BatchNorm: the accuracy rises (the panel's own measure and the live one), undo puts it back
        acc0 = app.text(ACCURACY)
        page.locator(f"{PANEL} .pv-recalibrate").first.click()
        result = wait_for(app, lambda: (t := app.text(f"{PANEL} .pv-recalibrate-result")) and "→" in t and t,
                          "the re-calibration")
        before, after = (float(v) for v in re.search(r"(\d+\.\d) % → (\d+\.\d) %", result).groups())
        assert after > before + 5, result
        wait_for(app, lambda: app.text(ACCURACY) != acc0, "the live accuracy to follow the re-calibration", 60)
        app.wait_idle()
        page.locator(f"{PANEL} .pv-recalibrate-undo").first.click()
        wait_for(app, lambda: "undone" in app.text(f"{PANEL} .pv-recalibrate-result"), "the undo")
        wait_for(app, lambda: app.text(ACCURACY) == acc0, "the live accuracy to come back", 60)
        app.wait_idle()

        # download the smaller model and the masked one (same plan), compare them in a fresh process
        files = {}
        select = page.locator(".pv-dashboard .pv-export select").first
        for form, label in [("smaller", "smaller model (.pt: reloads with torch.load(weights_only=True) + "
                                         "pruneviz.load_slim)"), ("masked", "permanent (pruned weights = 0)")]:
            select.select_option(label=label)
            with page.expect_download() as info:
                page.locator(".pv-dashboard .pv-save-model").first.click()
            files[form] = tmp_path / info.value.suggested_filename
            info.value.save_as(files[form])
            app.wait_idle()
        assert files["smaller"].name == "pruneviz-DigitsCNN-smaller.pt"
        assert "downloaded as" in app.text(".pv-dashboard .pv-export-result")
        assert not app.app_errors() and not app.errors, (app.app_errors(), app.errors)
    finally:
        app.close()
    script = textwrap.dedent(
        """
        import sys, torch
        import pruneviz
        from pruneviz.data import DigitsCNN, digits_tensors
        smaller, masked = sys.argv[1], sys.argv[2]
        raw = torch.load(smaller, weights_only=True)  # plain data, no pickled classes
        assert raw["format"] == "pruneviz-slim-model" and raw["history"]
        model = pruneviz.load_slim(smaller)
        ref = DigitsCNN()
        ref.load_state_dict(torch.load(masked, weights_only=True))
        x, _ = digits_tensors("test")
        with torch.inference_mode():
            diff = float((model.eval()(x) - ref.eval()(x)).abs().max())
        print(diff, sum(p.numel() for p in model.parameters()), sum(p.numel() for p in ref.parameters()))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(files["smaller"]), str(files["masked"])],
                          capture_output=True, text=True, env=env, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    diff, small, dense = done.stdout.split()
    assert float(diff) <= 1e-5 and int(small) < int(dense) / 3, done.stdout
