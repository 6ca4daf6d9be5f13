"""Real-browser harness shared by the UI tests and benchmarks/bench_app.py: a Voila server on a free port,
Debian's headless Chromium via Playwright, and a loaded-app page helper."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("PRUNEVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Poll the TCP port (never the page: each GET of the page starts a kernel)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"voila did not listen on port {port} within {timeout} s")


class VoilaServer:
    """A voila process serving one notebook; stopped by the process id it started."""

    def __init__(self, notebook: str = "dashboard.ipynb", *extra: str) -> None:
        self.port = free_port()
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"voila-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [  # the app's own server: Voila with the visitor bound (pruneviz/app/serve.py)
            sys.executable, "-m", "pruneviz.app.serve", notebook, "--no-browser", f"--port={self.port}",
            "--Voila.ip=127.0.0.1", *extra,
        ]
        self.proc = subprocess.Popen(cmd, cwd=NOTEBOOKS, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started = time.monotonic()
        wait_for_port(self.port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}/"

    def kernel_pids(self) -> list[int]:
        """Kernel processes started by this voila (children running ipykernel)."""
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(line.split()[0]) for line in out.splitlines() if "ipykernel" in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


class AppPage:
    """One loaded dashboard page, with helpers that wait on the app's own status element."""

    def __init__(self, browser, url: str, timeout_ms: float = 90_000) -> None:
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1500, "height": 1300})
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.ws_bytes = 0  # everything received over the page's websockets
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._count))
        self.files: list[tuple[int, str]] = []  # (status, url) of files Voila served beside the notebook
        self.page.on("response", lambda r: self.files.append((r.status, r.url)) if "/voila/files/" in r.url else None)
        self.page.set_default_timeout(timeout_ms)
        self.t0 = time.monotonic()
        self.page.goto(url, wait_until="domcontentloaded")
        self.page.wait_for_selector("#loading", state="detached")
        self.page.wait_for_selector(".pv-global-slider .noUi-handle")
        self.wait_idle()
        self.load_s = time.monotonic() - self.t0

    def _count(self, payload) -> None:
        self.ws_bytes += len(payload.encode() if isinstance(payload, str) else payload)

    def wait_idle(self) -> None:
        self.page.wait_for_selector(".pv-dashboard .pv-status.pv-idle")

    def wait_plots(self) -> None:
        """The plots draw after the page is interactive (plotly.js is loaded once the page shows)."""
        for sel in (".pv-dashboard .pv-hist .main-svg", ".pv-dashboard .pv-filters .main-svg"):
            self.page.locator(sel).last.wait_for(state="visible")
        self.page.wait_for_function("() => !Array.from(document.querySelectorAll('.pv-plot-loading'))"
                                    ".some(e => e.offsetParent !== null)")

    def set_slider(self, slider: str, value: float, attempts: int = 4) -> None:
        """Type ``value`` into the readout of the slider ``slider`` (a CSS class selector) and press Enter, until
        its handle says that value (a readout re-rendered by a late echo of an earlier key press between the
        click and the typing would otherwise get the digits appended)."""
        readout = self.page.locator(f".pv-dashboard {slider} .widget-readout").first
        handle = self.page.locator(f".pv-dashboard {slider} .noUi-handle").first
        want = float(value)
        for _ in range(attempts):
            self.wait_idle()
            readout.click()
            readout.press("Control+a")
            readout.type(str(value))
            readout.press("Enter")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                now = handle.get_attribute("aria-valuenow")
                if now is not None and abs(float(now) - want) < 1e-6:
                    return
                time.sleep(0.05)
        raise AssertionError(f"the slider {slider} did not take the value {value} (it shows "
                             f"{handle.get_attribute('aria-valuenow')})")

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text()

    def app_errors(self) -> str:
        """Visible text of the app's error areas."""
        texts = self.page.eval_on_selector_all(
            ".pv-error, .pv-app-error", "els => els.filter(e => e.offsetParent !== null).map(e => e.innerText)"
        )
        return " ".join(t for t in texts if t.strip())

    def screenshot(self, name: str) -> Path:
        """The whole app: Voila scrolls inside ``#rendered_cells``, so the viewport grows to fit it first."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        size = self.page.viewport_size
        height = self.page.evaluate(
            "() => { const c = document.getElementById('rendered_cells');"
            " return c ? c.scrollHeight + c.getBoundingClientRect().top : document.body.scrollHeight; }")
        self.page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(height) + 16)})
        try:
            self.page.screenshot(path=str(path), full_page=True)
        finally:
            self.page.set_viewport_size(size)
        return path

    def close(self) -> None:
        self.page.close(run_before_unload=True)


def launch_browser(pw):
    """Launch Debian's Chromium with the flags this offline machine needs."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"Chromium is missing at {CHROMIUM}: install it with `apt-get install -y chromium`.")
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
