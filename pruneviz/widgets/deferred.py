"""Load plotly.js after the page is interactive.

Every plotly ``FigureWidget`` ships the whole plotly.js bundle (~5 MB) as its anywidget module, and the
browser evaluates it before the page becomes interactive: ~0.75-1 s of blocked page per evaluation on a
2-core laptop, on top of Voila's own ~1.5 s. So the app builds its figures with a tiny placeholder module,
and a small widget reports "rendered" once the browser has drawn the page and the visitor has left it alone
for a second; then the real module is swapped in. anywidget reloads a widget's module when ``_esm`` changes
and draws the figure from the state it already holds: the sliders work at once and the plots follow.

Served by Voila, the bundle need not travel over the websocket at all: :func:`publish_plotly_bundle` copies it
once beside the notebook (``_static/``, allowlisted in ``notebooks/voila.json``), the browser imports it by URL
(evaluated once for every figure, cached by the browser) and the figures get
that URL as their module. Where the file is not served (no ``voila.json`` allowlist: e.g. Voila started from
another folder, or JupyterLab) the browser reports no URL and the figures get the inline bundle as before.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import anywidget
import plotly
import plotly.graph_objects as go
import traitlets

from ..core.files import atomic_write

log = logging.getLogger(__name__)

#: Folder, beside the notebook, that holds the copy of plotly's widget bundle Voila serves.
STATIC_DIR = "_static"
BUNDLE_NAME = f"plotly-widget-{plotly.__version__}.js"
_BUNDLE_SOURCE = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"


def publish_plotly_bundle(directory: str | os.PathLike) -> str | None:
    """Copy plotly's widget bundle to ``directory/_static/`` (once per plotly version) so Voila can serve it.

    Returns its path relative to ``directory``, or None (logged) when it cannot be written; the figures then
    carry the bundle inline.
    """
    dest = Path(directory) / STATIC_DIR / BUNDLE_NAME
    try:
        size = _BUNDLE_SOURCE.stat().st_size
        if not (dest.is_file() and dest.stat().st_size == size):
            dest.parent.mkdir(exist_ok=True)
            data = _BUNDLE_SOURCE.read_bytes()

            def write(f) -> None:
                os.fchmod(f.fileno(), 0o644)  # a temporary file is private to its owner; this one is served
                f.write(data)

            atomic_write(dest, write)
    except Exception:  # noqa: BLE001 - read-only folder, missing bundle: fall back to the inline module
        log.warning("pruneviz: could not publish plotly's bundle to %s; the plots carry it inline", dest,
                    exc_info=True)
        return None
    return f"{STATIC_DIR}/{BUNDLE_NAME}"

PLACEHOLDER_ESM = """
export default {
  render({ model, el }) {
    // a box of the figure's own size, so nothing on the page moves when the plot replaces it
    const layout = model.get("_widget_layout") || {};
    const note = document.createElement("div");
    note.className = "pv-plot-loading";
    note.textContent = "loading the plots…";
    Object.assign(note.style, {
      width: (layout.width || 700) + "px", maxWidth: "100%", height: (layout.height || 450) + "px",
      display: "flex", alignItems: "center", justifyContent: "center", boxSizing: "border-box",
      border: "1px dashed #d1d5db", borderRadius: "4px", color: "#6b7280", background: "#f9fafb",
    });
    el.appendChild(note);
    return () => note.remove();  // anywidget calls this before it draws with the real module
  }
};
"""


class PageReady(anywidget.AnyWidget):
    """Sends one message to the kernel when the browser has drawn it (class ``pv-page-ready``).

    With a ``bundle`` path set, the browser first looks for that file under Voila's ``voila/files/`` route
    and imports it; the message then carries its absolute URL (``esm_url``), or null if it failed.
    """

    _esm = """
async function preload(path) {
  if (!path) return null;
  try {
    let base = "/";
    const config = document.getElementById("jupyter-config-data");
    if (config) base = JSON.parse(config.textContent).baseUrl || "/";
    // Voila serves the notebook's folder under voila/files/ (in tree mode the notebook may sit in a subfolder)
    const m = location.pathname.match(/\\/voila\\/render\\/(.*\\/)?[^/]*$/);
    // "?v=" makes Tornado send a long cache lifetime (the file name carries plotly's version)
    const url = new URL(base + "voila/files/" + (m && m[1] ? m[1] : "") + path + "?v=1", location.origin).href;
    const head = await fetch(url, { method: "HEAD" });
    if (!head.ok) return null;
    await import(url);  // compiled off the main thread, evaluated once; the figures then import it from cache
    return url;
  } catch (e) {
    console.warn("pruneviz: plotly bundle not served, the plots load it inline", e);
    return null;
  }
}
// Evaluating plotly.js blocks the page for ~0.75 s here: start it only once the visitor has left the page
// alone for QUIET_MS (no key, click, wheel or drag), so a slider press never waits behind it.
const QUIET_MS = 1000;
function whenQuiet(fn) {
  const events = ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"];
  let timer = null;
  let cancelled = false;
  const arm = (e) => {
    if (e && e.type === "pointermove" && !e.buttons) return;  // only drags count, not a resting mouse
    clearTimeout(timer);
    timer = setTimeout(go, QUIET_MS);
  };
  const stop = () => {
    clearTimeout(timer);
    events.forEach((t) => window.removeEventListener(t, arm, true));
  };
  const go = () => {
    stop();
    const run = () => { if (!cancelled) fn(); };
    if (window.requestIdleCallback) { window.requestIdleCallback(run, { timeout: 1000 }); } else { run(); }
  };
  events.forEach((t) => window.addEventListener(t, arm, { capture: true, passive: true }));
  arm();
  return () => { cancelled = true; stop(); };
}
export default {
  render({ model }) {
    // the view removed first (e.g. the model picker switched away): no listeners left, nothing sent
    return whenQuiet(async () => model.send({ event: "rendered", esm_url: await preload(model.get("bundle")) }));
  }
};
"""
    bundle = traitlets.Unicode("").tag(sync=True)
    rendered = traitlets.Bool(False).tag(sync=False)

    def __init__(self, on_rendered: Callable[[str | None], None], bundle: str | None = None) -> None:
        super().__init__(layout={"width": "0px", "height": "0px", "overflow": "hidden"}, bundle=bundle or "")
        self.add_class("pv-page-ready")
        self._callback = on_rendered
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: object, content: dict, _buffers: object) -> None:
        if isinstance(content, dict) and content.get("event") == "rendered" and not self.rendered:
            self.rendered = True
            self._callback(self._checked_url(content.get("esm_url")))

    def _checked_url(self, url: object) -> str | None:
        """The browser's URL for the bundle if it is exactly what :func:`bundle_url_ok` expects, else None."""
        return url if self.bundle and isinstance(url, str) and bundle_url_ok(url, self.bundle) else None


def bundle_url_ok(url: str, bundle: str, base_url: str | None = None) -> bool:
    """True for ``http(s)://host<base_url>voila/files/[folder/]<bundle>?v=1`` and nothing else (no user info,
    fragment, other query or ``..``). ``base_url``: Voila's (default: ``VOILA_BASE_URL``, else "/")."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    base = (base_url if base_url is not None else os.environ.get("VOILA_BASE_URL", "/")).rstrip("/")
    return (
        parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc
        and not parts.fragment and parts.query == "v=1" and ".." not in parts.path
        and parts.path.startswith(f"{base}/voila/files/") and parts.path.endswith("/" + bundle)
    )


class DeferredPlotly:
    """Holds figures on the placeholder module until :meth:`load` (called once the page has rendered).

    The figures load one after another, ``stagger_s`` apart, so the browser evaluates one bundle at a time
    and a slider press never waits behind more than one (~1 s here) instead of all of them.
    """

    def __init__(self, figures: Sequence[go.FigureWidget], stagger_s: float = 1.5,
                 bundle: str | None = None, before_load: Callable[[go.FigureWidget], None] | None = None) -> None:
        self.stagger_s = stagger_s
        # called with each figure just before its real module is sent: the browser's copy of the figure's state
        # is the one sent when the page was drawn; updates sent while the placeholder showed were not drawn
        self.before_load = before_load
        self._real = [(fig, fig._esm) for fig in figures]
        for fig in figures:
            fig._esm = PLACEHOLDER_ESM
        self.loaded = False
        self.esm_url: str | None = None  # the URL the browser imported plotly.js from (None: inline)
        self.widget = PageReady(self.load, bundle)

    def load(self, esm_url: str | None = None) -> None:
        """Send each figure its real plotly.js module: ``esm_url`` (the browser already imported it) or inline."""
        if self.loaded:
            return
        self.loaded = True
        self.esm_url = esm_url
        pending = [(fig, esm_url or esm) for fig, esm in self._real]
        if esm_url:  # the module is evaluated already: each figure only draws, no need to wait long between
            self.stagger_s = min(self.stagger_s, 0.3)
        self._load_next(pending)

    def _load_next(self, pending: list) -> None:
        if not pending:
            return
        fig, esm = pending.pop(0)
        try:
            if self.before_load is not None:
                self.before_load(fig)
            fig._esm = esm
        except Exception:  # noqa: BLE001 - a figure closed meanwhile
            log.debug("could not load plotly for a figure", exc_info=True)
        if pending:
            if self.stagger_s <= 0:
                self._load_next(pending)
            else:
                timer = threading.Timer(self.stagger_s, self._load_next, args=(pending,))
                timer.daemon = True
                timer.start()
