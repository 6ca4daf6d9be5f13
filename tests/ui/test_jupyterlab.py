"""The explorer inside JupyterLab (not only Voila): open a notebook, run ``pv.explore()``, move the slider with
the keyboard, see the headline and the histogram change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from harness import ARTIFACTS, free_port, wait_for_port

pytestmark = [pytest.mark.ui, pytest.mark.slow]

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "explore", "metadata": {}, "outputs": [],
               "source": ["import pruneviz as pv\n", "app = pv.explore()\n", "app"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "explore.ipynb").write_text(json.dumps(NOTEBOOK))
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"jupyterlab-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/lab/tree/explore.ipynb"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_explorer_in_jupyterlab_with_the_keyboard(browser, lab):
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(int(os.environ.get("PV_LAB_TIMEOUT_MS", "120000")))
    try:
        page.goto(lab, wait_until="domcontentloaded")
        cell = page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first
        cell.wait_for(state="visible")
        # the kernel must be up before the cell runs (else Shift+Enter only moves to a new cell)
        page.wait_for_function("() => /\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget, "
                               "#jp-main-statusbar')?.innerText || '')")
        cell.click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_selector(".pv-explorer .pv-global-slider .noUi-handle", state="visible")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-failed.png"), full_page=True)
            raise
        page.wait_for_selector(".pv-explorer .pv-status.pv-idle")
        page.locator(".pv-explorer .pv-hist .main-svg").first.wait_for(state="visible")
        headline = page.locator(".pv-explorer .pv-headline").first
        hist = page.locator(".pv-explorer .pv-hist").first
        head0, hist0 = headline.inner_text(), hist.inner_text()
        assert "0 % of weights removed" in head0
        handle = page.locator(".pv-explorer .pv-global-slider .noUi-handle").first
        handle.focus()
        for _ in range(30):
            handle.press("ArrowRight")
        page.wait_for_selector(".pv-explorer .pv-status.pv-idle")
        deadline = time.monotonic() + 60  # the headline settles on what the slider shows
        while time.monotonic() < deadline:
            shown = round(float(handle.get_attribute("aria-valuenow")))
            head1 = headline.inner_text()
            if f"{shown} % of weights removed" in head1:
                break
            time.sleep(0.2)
        assert shown >= 20 and f"{shown} % of weights removed" in head1 and head1 != head0, (shown, head1)
        deadline = time.monotonic() + 30
        while hist.inner_text() == hist0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hist.inner_text() != hist0 and "pruned" in hist.inner_text()
        assert page.locator(".pv-explorer .pv-error").first.inner_text().strip() == ""
        assert not errors, errors
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-explorer.png"), full_page=True)
    finally:
        page.close()
