"""Real-browser fixtures: a Voila server on a free port and Debian's headless Chromium via Playwright."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import VoilaServer, launch_browser


@pytest.fixture(scope="module")
def voila_server() -> Iterator[VoilaServer]:
    server = VoilaServer("dashboard.ipynb")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            b = launch_browser(pw)
        except FileNotFoundError as e:  # a missing browser is a failure, never a skip
            pytest.fail(str(e))
        yield b
        b.close()
