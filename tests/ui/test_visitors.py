"""A room full of visitors and a burst of key presses, in real browsers on one app server."""

from __future__ import annotations

import re
import time

import pytest
from harness import AppPage, VoilaServer
from visitors import kernel_rss_mb, run_room, summary

pytestmark = [pytest.mark.ui, pytest.mark.slow]

HEADLINE = ".pv-dashboard .pv-headline"


def test_eight_visitors_each_see_their_own_state_and_closed_pages_free_their_kernels(browser):
    server = VoilaServer("dashboard.ipynb", "--max-visitors=10", "--MappingKernelManager.cull_idle_timeout=10",
                         "--MappingKernelManager.cull_interval=5")
    try:
        room = run_room(browser, server, n=8, moves=2)
        figures = summary(room)
        print("visitors:", figures)
        assert room.all_correct, room.wrong
        assert server.proc.poll() is None  # the server is still up
        assert len(room.kernel_rss_mb) >= 8
        deadline = time.monotonic() + 90  # the closed pages' kernels are culled: no kernel, no thread left
        while len(server.kernel_pids()) > 2 and time.monotonic() < deadline:
            time.sleep(2)
        assert len(server.kernel_pids()) <= 2, server.kernel_pids()
        assert sum(kernel_rss_mb(server)) < 0.5 * sum(room.kernel_rss_mb)  # their memory went with them
    finally:
        server.stop()


def test_a_burst_of_1000_key_presses_ends_in_the_last_state(browser, voila_server):
    app = AppPage(browser, voila_server.url)
    try:
        page = app.page
        page.evaluate("""() => {
            window.__heads = [];
            const el = document.querySelector('.pv-dashboard .pv-headline');
            new MutationObserver(() => window.__heads.push(
                    [performance.now(), el.innerText, !!el.querySelector('.pv-stale')]))
                .observe(el, {subtree: true, childList: true, characterData: true});
        }""")
        handle = page.locator(".pv-dashboard .pv-global-slider .noUi-handle").first
        handle.focus()
        for i in range(1000):  # up to 50 %, then wandering: 700 rights and 300 lefts
            handle.press("ArrowRight" if i < 50 or i % 10 < 7 else "ArrowLeft")
        last_press = page.evaluate("() => performance.now()")
        final_value = round(float(handle.get_attribute("aria-valuenow")))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            head = app.text(HEADLINE)
            if f"{final_value} % of weights removed" in head and "≈" not in head:
                break
            time.sleep(0.1)
        app.wait_idle()
        time.sleep(1.0)  # nothing may arrive afterwards for an older state
        head = app.text(HEADLINE)
        assert f"{final_value} % of weights removed" in head and "≈" not in head, (final_value, head)
        seen = [(text, stale) for t, text, stale in page.evaluate("() => window.__heads") if t > last_press]
        after = [text for text, _ in seen]
        # a result is "shown" when it is neither an estimate (≈) nor greyed as belonging to an older plan
        shown = [text for text, stale in seen if not stale and "≈" not in text]
        finals = [t for t in shown if f"{final_value} % of weights removed" in t]
        assert finals and after[-1] == head
        later = after[after.index(finals[0]):]
        assert all(f"{final_value} % of weights removed" in t for t in later), later  # never went back
        accuracies = {re.search(r"Accuracy ([\d.]+) %", t).group(1) for t in shown[shown.index(finals[0]):]}
        assert len(accuracies) == 1, accuracies  # one final evaluation shown for the last state
        assert not app.app_errors() and not app.errors
    finally:
        app.close()
