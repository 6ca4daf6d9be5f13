"""The demo CNN's report (the CI artifact) in a real browser: self-contained, drawn, one screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruneviz.report import make_report

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_full_demo_report_and_its_screenshot(browser):
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    r = make_report("cnn", out=artifacts / "report-cnn", overwrite=True, seeds=3)
    assert len(r.race.criteria) == 9 and len(r.race.rows) == 9 * 3 * 10 * 3
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(r.files["report.html"].resolve().as_uri())
        assert page.locator("svg").count() >= 10
        assert page.locator("h1").inner_text().startswith("pruneviz")
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    finally:
        page.close()
    assert errors == [] and len(requests) == 1  # the page itself: nothing else is fetched
