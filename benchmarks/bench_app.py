"""Measure the Voila app in a real browser: time to interactive (cold / preheated), websocket bytes until
interactive for each embedded model, slider key press -> accuracy text change, and ``visitors8``: eight visitors
on one server, each setting its slider (every page must show its own state: ``all_correct``), the p95 of
slider -> its own accuracy, and a visitor's kernel RSS.

    .venv/bin/python benchmarks/bench_app.py --json benchmarks/results/app.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from harness import AppPage, VoilaServer, launch_browser  # noqa: E402
from report import write_json  # noqa: E402 - benchmarks/ is on sys.path when run as a script
from visitors import run_room, summary  # noqa: E402

ACCURACY = ".pv-dashboard .pv-accuracy"
HEADLINE = ".pv-dashboard .pv-headline"
TARGETS = {"cold": 10.0, "preheated": 3.0, "slider_to_accuracy_s": 1.0, "ws_bytes": 12e6}


def press_until_change(app: AppPage, key: str = "ArrowRight", selector: str = ACCURACY,
                       timeout: float = 30.0) -> float:
    """Press ``key`` once on the global slider's handle; seconds until the text of ``selector`` changes."""
    before = app.text(selector)
    handle = app.page.locator(".pv-dashboard .pv-global-slider .noUi-handle").first
    handle.focus()
    t0 = time.monotonic()
    handle.press(key)
    while time.monotonic() - t0 < timeout:
        if app.text(selector) != before:
            return time.monotonic() - t0
        time.sleep(0.01)
    raise TimeoutError(f"{selector} did not change")


def set_global(app: AppPage, percent: int) -> None:
    app.set_slider(".pv-global-slider", percent)
    time.sleep(0.3)
    app.wait_idle()


def time_to_interactive(browser, server: VoilaServer) -> tuple[float, int, float, int]:
    """Page request until the slider responds (a key press on it changed the headline), and the websocket
    bytes received until the page was interactive."""
    app = AppPage(browser, server.url, timeout_ms=120_000)  # loaded: #loading gone, slider shown, status idle
    received = app.ws_bytes
    press_until_change(app, selector=HEADLINE)  # the kernel answered the slider: "1 % of weights removed"
    tti = time.monotonic() - app.t0
    app.page.wait_for_selector(".pv-hist .main-svg")  # plotly.js arrives after the page is interactive
    app.page.wait_for_selector(".pv-filters .main-svg")
    plots_s, with_plots = time.monotonic() - app.t0, app.ws_bytes
    app.close()
    return tti, received, plots_s, with_plots


#: the picker's button label and a piece of that model's explorer title
PICKS = {"mlp": ("MLP", "demo MLP"), "detector": ("detector", "demo detector"), "text_gru": ("Text GRU", "GRU on"),
         "text_transformer": ("Text Transformer", "Transformer encoder"), "audio_cnn": ("Audio CNN", "spectrograms"),
         "tabular_mlp": ("Tabular MLP", "breast cancer")}


def open_times(app: AppPage) -> dict[str, float]:
    """Seconds from a click on the model picker until that model's explorer answers its slider."""
    out = {}
    for name, (label, title) in PICKS.items():
        t0 = time.monotonic()
        app.page.locator(".pv-dashboard .pv-model-picker button", has_text=label).first.click()
        app.page.wait_for_function(
            "t => Array.from(document.querySelectorAll('.pv-dashboard .pv-title')).some(e => e.innerText.includes(t))",
            arg=title)
        app.wait_idle()
        press_until_change(app, selector=HEADLINE)
        out[name] = round(time.monotonic() - t0, 2)
    return out


def wait_preheated(server: VoilaServer, seconds: float) -> None:
    """Give the kernel pool time to start a kernel and run the notebook in it."""
    time.sleep(seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--preheat-wait", type=float, default=30.0)
    ap.add_argument("--visitor-moves", type=int, default=3, help="slider moves per visitor (8 visitors)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    results: dict = {"meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "date": time.strftime("%Y-%m-%d %H:%M")}}
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        cold = VoilaServer("dashboard.ipynb", "--VoilaConfiguration.preheat_kernel=False")
        try:
            cold_tti, cnn_bytes, cold_plots, cnn_all = time_to_interactive(browser, cold)
        finally:
            cold.stop()
        hot = VoilaServer("dashboard.ipynb")
        try:
            wait_preheated(hot, args.preheat_wait)
            hot_tti, _, hot_plots, _ = time_to_interactive(browser, hot)
            wait_preheated(hot, args.preheat_wait)
            app = AppPage(browser, hot.url)
            opened = open_times(app)  # every other model, from a click on the picker to its slider answering
            app.close()
            wait_preheated(hot, args.preheat_wait)
            app = AppPage(browser, hot.url)
            app.wait_plots()  # measured with the plots drawn: each move also redraws them
            set_global(app, 80)  # from 80 % every 1 % step changes the digits CNN's accuracy
            slider = []
            for i in range(args.repeats):
                slider.append(press_until_change(app, "ArrowRight" if i % 2 == 0 else "ArrowLeft"))
                app.wait_idle()
            app.close()
        finally:
            hot.stop()
        room = VoilaServer("dashboard.ipynb", "--max-visitors=10")
        try:
            visitors8 = summary(run_room(browser, room, n=8, moves=args.visitor_moves))
        finally:
            room.stop()
        os.environ["PRUNEVIZ_MODEL"] = "mlp"
        mlp = VoilaServer("dashboard.ipynb", "--VoilaConfiguration.preheat_kernel=False")
        try:
            _, mlp_bytes, _, mlp_all = time_to_interactive(browser, mlp)
        finally:
            mlp.stop()
            del os.environ["PRUNEVIZ_MODEL"]
        browser.close()
    results["time_to_interactive_s"] = {"cold": round(cold_tti, 2), "preheated": round(hot_tti, 2)}
    results["ws_bytes"] = {"digits_cnn": cnn_bytes, "digits_mlp": mlp_bytes}
    results["ws_bytes_with_plots"] = {"digits_cnn": cnn_all, "digits_mlp": mlp_all}
    results["time_to_plots_s"] = {"cold": round(cold_plots, 2), "preheated": round(hot_plots, 2)}
    results["slider_to_accuracy_s"] = round(statistics.median(slider), 3)
    results["slider_to_accuracy_all_s"] = [round(s, 3) for s in slider]
    results["visitors8"] = visitors8
    results["model_open_s"] = opened
    rows = [
        ("time to interactive, cold", cold_tti, TARGETS["cold"], "s"),
        ("time to interactive, preheated", hot_tti, TARGETS["preheated"], "s"),
        ("slider -> accuracy (median)", results["slider_to_accuracy_s"], TARGETS["slider_to_accuracy_s"], "s"),
        ("websocket bytes, digits CNN", cnn_bytes / 1e6, TARGETS["ws_bytes"] / 1e6, "MB"),
        ("websocket bytes, digits MLP", mlp_bytes / 1e6, TARGETS["ws_bytes"] / 1e6, "MB"),
    ]
    print(f"{'measure':34} {'value':>9} {'target':>9}  result")
    for name, value, target, unit in rows:
        print(f"{name:34} {value:>8.2f}{unit[0]} {target:>8.2f}{unit[0]}  {'PASS' if value <= target else 'FAIL'}")
    print(f"plots drawn: cold {cold_plots:.2f} s, preheated {hot_plots:.2f} s; websocket bytes with the plots: "
          f"CNN {cnn_all / 1e6:.2f} MB, MLP {mlp_all / 1e6:.2f} MB")
    print("picker click -> that model's slider answers: " + ", ".join(f"{k} {v:.2f} s" for k, v in opened.items()))
    print(f"8 visitors: all correct {visitors8['all_correct']}, slider -> own accuracy p95 "
          f"{visitors8['p95_slider_to_accuracy_s']} s (median {visitors8['median_slider_to_accuracy_s']} s), kernel RSS "
          f"{visitors8['kernel_rss_mb']} MB each (max {visitors8['kernel_rss_mb_max']} MB)")
    growth = mlp_all / max(cnn_all, 1)
    print(f"MLP/CNN websocket bytes with the plots: {growth:.3f} (the payload does not grow with the layers shown)")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
