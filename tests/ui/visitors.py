"""A room of visitors: several browser pages on one app server, each moving its own slider (shared by the
load test and benchmarks/bench_app.py)."""

from __future__ import annotations

import random
import re
import statistics
import time
from dataclasses import dataclass, field

import psutil
from harness import AppPage, VoilaServer

HEADLINE = ".pv-dashboard .pv-headline"


def expected_accuracy(percent: int) -> str:
    """The demo CNN's accuracy text at ``percent`` global magnitude sparsity, computed here in-process."""
    from pruneviz.core import PruningSession
    from pruneviz.core.evaluate import Evaluator
    from pruneviz.data import digits_tensors, load_demo_model

    model = load_demo_model("cnn")
    s = PruningSession(model, scope="global")
    s.set_global_sparsity(percent / 100)
    acc = Evaluator(model, digits_tensors("test")).evaluate(model).accuracy
    return f"{100 * acc:.1f} %"


@dataclass
class Room:
    """What the visitors saw: per move the seconds from setting the slider to its own accuracy."""

    pages: int
    moves: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    kernel_rss_mb: list[float] = field(default_factory=list)

    @property
    def all_correct(self) -> bool:
        return not self.wrong


def kernel_rss_mb(server: VoilaServer) -> list[float]:
    return [psutil.Process(pid).memory_info().rss / 2**20 for pid in server.kernel_pids()]


def run_room(browser, server: VoilaServer, n: int = 8, moves: int = 3, seed: int = 0) -> Room:
    """Open ``n`` pages, then each in turn sets its slider ``moves`` times to values no other page uses; after
    every move its headline must show its own value and its accuracy the value computed here for it."""
    rng = random.Random(seed)
    room = Room(n)
    pages = [AppPage(browser, server.url, timeout_ms=180_000) for _ in range(n)]
    expected: dict[int, str] = {}
    try:
        for step in range(moves):
            for i, app in enumerate(pages):
                percent = 5 + (i * moves + step) * 90 // (n * moves) + rng.randint(0, 1)
                t0 = time.monotonic()
                app.set_slider(".pv-global-slider", percent)
                # done when the headline shows this page's value with a final, current result (not an
                # estimate, not the previous state's result greyed as stale); the accuracy text alone can stay
                # the same (5 % of the CNN's weights cost no digit)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    head = app.text(HEADLINE)
                    if (f"{percent} % of weights removed" in head and "≈" not in head and "Accuracy" in head
                            and app.page.locator(f"{HEADLINE} .pv-stale").count() == 0):
                        break
                    time.sleep(0.02)
                app.wait_idle()
                room.moves.append(time.monotonic() - t0)
                if percent not in expected:
                    expected[percent] = expected_accuracy(percent)
                head = app.text(HEADLINE)
                shown = re.search(r"(\d+) % of weights removed", head)
                if not shown or int(shown.group(1)) != percent or f"Accuracy {expected[percent]}" not in head:
                    room.wrong.append(f"page {i}: set {percent} %, shows {head!r} (expected {expected[percent]})")
        room.kernel_rss_mb = kernel_rss_mb(server)
        # every page still shows its own last state (none saw another's)
        for i, app in enumerate(pages):
            head = app.text(HEADLINE)
            own = app.page.locator(".pv-dashboard .pv-global-slider .noUi-handle").first.get_attribute("aria-valuenow")
            if f"{round(float(own))} % of weights removed" not in head:
                room.wrong.append(f"page {i}: slider at {own}, headline {head!r}")
    finally:
        for app in pages:
            app.close()
    return room


def p95(values: list[float]) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))] if v else float("nan")


def summary(room: Room) -> dict:
    return {"visitors": room.pages, "all_correct": room.all_correct, "moves": len(room.moves),
            "p95_slider_to_accuracy_s": round(p95(room.moves), 2),
            "median_slider_to_accuracy_s": round(statistics.median(room.moves), 2) if room.moves else None,
            "kernel_rss_mb": round(statistics.median(room.kernel_rss_mb), 1) if room.kernel_rss_mb else None,
            "kernel_rss_mb_max": round(max(room.kernel_rss_mb), 1) if room.kernel_rss_mb else None,
            "wrong": room.wrong[:5]}
