"""The app's server in front of visitors: a bound on concurrent visitors with a plain busy page, and a token
when it is served beyond this machine."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from harness import AppPage, VoilaServer

pytestmark = [pytest.mark.ui, pytest.mark.slow]


def fetch(url: str, size: int = 4096) -> tuple[int, str]:
    """(status, the start of the body); redirects followed (a login page says where it ended up)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - a loopback test server
            return r.status, r.geturl() + "\n" + r.read(size).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def test_a_visitor_beyond_the_bound_gets_the_busy_page_and_the_others_keep_working(browser):
    server = VoilaServer("dashboard.ipynb", "--max-visitors=1", "--MappingKernelManager.cull_idle_timeout=8",
                         "--MappingKernelManager.cull_interval=4")
    try:
        first = AppPage(browser, server.url)
        try:
            status, body = fetch(server.url)
            assert status == 503 and "The demo is busy" in body and "try again in" in body, (status, body[:300])
            head = first.text(".pv-dashboard .pv-headline")
            first.set_slider(".pv-global-slider", 40)
            deadline = time.monotonic() + 30
            while first.text(".pv-dashboard .pv-headline") == head and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "40 % of weights removed" in first.text(".pv-dashboard .pv-headline")
        finally:
            first.close()
        deadline = time.monotonic() + 60  # the closed page's kernel is culled: its seat is free again
        while time.monotonic() < deadline:
            status, _ = fetch(server.url)
            if status == 200:
                break
            time.sleep(2)
        assert status == 200
    finally:
        server.stop()


def test_a_token_keeps_strangers_out():
    server = VoilaServer("dashboard.ipynb", "--token", "--VoilaConfiguration.preheat_kernel=False")
    try:
        status, body = fetch(server.url, 200_000)
        assert status in (401, 403) or "/login" in body.split("\n", 1)[0], (status, body[:200])
        assert "see what pruning does" not in body  # not the app's page
        log = server.log_path.read_text()
        deadline = time.monotonic() + 10
        while "token=" not in log and time.monotonic() < deadline:
            time.sleep(0.2)
            log = server.log_path.read_text()
        token = log.split("token=", 1)[1].split()[0].strip()
        status, body = fetch(f"{server.url}?token={token}", 400_000)
        assert status == 200 and "see what pruning does" in body
    finally:
        server.stop()
