"""The app's server: Voila with a bound on concurrent visitors.

Every visitor gets a kernel of their own (a few hundred MB: measured in README). Beyond ``--max-visitors``
(default: the ``PRUNEVIZ_MAX_VISITORS`` environment variable, else sized to this machine's memory) a new
visitor gets a plain "the demo is busy" page (HTTP 503, Retry-After 60) instead of a kernel, and the server
keeps serving everyone already there. Closed pages' kernels are culled (``notebooks/voila.json``), which
frees their places.

    python -m pruneviz.app.serve dashboard.ipynb --no-browser --port=8866 [--max-visitors=N] [voila options]
"""

from __future__ import annotations

import os
import sys
from typing import Any

from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

#: a visitor's kernel on the demo CNN: 1,054 MB resident, measured by tests/ui/test_visitors.py (8 visitors);
#: with a margin for the other models a visitor may open
KERNEL_MB = 1200
#: memory left to the server, the browser tests and the system
RESERVED_MB = 3000

BUSY_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>pruneviz: busy</title>
<meta http-equiv="refresh" content="60"></head>
<body style="font-family:system-ui,sans-serif;max-width:34em;margin:4em auto;color:#1f2937">
<h1 style="font-size:1.5em">The demo is busy</h1>
<p class="pv-busy-page">Every seat of this pruneviz demo is taken right now ({visitors} visitors). Please try again in
a minute: this page reloads by itself.</p></body></html>"""


def default_max_visitors() -> int:
    """``PRUNEVIZ_MAX_VISITORS`` if set, else what this machine's memory holds (at least 1)."""
    env = os.environ.get("PRUNEVIZ_MAX_VISITORS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            print(f"[pruneviz] PRUNEVIZ_MAX_VISITORS={env!r} is not a whole number; sizing to memory instead",
                  file=sys.stderr)
    try:
        import psutil

        total_mb = psutil.virtual_memory().total / 2**20
    except Exception:  # noqa: BLE001 - no psutil, or no /proc: a safe small default
        return 4
    return max(1, int((total_mb - RESERVED_MB) // KERNEL_MB))


def visitor_kernels(kernel_manager: Any) -> int:
    """Kernels serving visitors: all the kernels but the preheated ones still waiting in their pools."""
    try:
        total = len(kernel_manager.list_kernel_ids())
    except Exception:  # noqa: BLE001 - a kernel manager without the listing
        return 0
    pools = getattr(kernel_manager, "_pools", {}) or {}
    waiting = sum(len(p) for p in pools.values())
    return max(0, total - waiting)


class VisitorLimitedHandler(TornadoVoilaHandler):
    """Voila's page handler, answering "busy" when the visitor bound is reached."""

    async def get(self, path: str | None = None) -> None:
        limit = self.settings.get("pruneviz_max_visitors")
        now = visitor_kernels(self.kernel_manager)
        if limit is not None and now >= limit:
            self.log.warning("pruneviz: %d visitors (the limit): a new visitor got the busy page", now)
            self.set_status(503)
            self.set_header("Retry-After", "60")
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(BUSY_PAGE.format(visitors=now))
            return
        await super().get(path)


class PrunevizVoila(Voila):
    """Voila with :class:`VisitorLimitedHandler` for the notebook page."""

    max_visitors = default_max_visitors()

    def init_handlers(self) -> list:
        handlers = super().init_handlers()
        return [(h[0], VisitorLimitedHandler, *h[2:]) if len(h) > 1 and h[1] is TornadoVoilaHandler else h
                for h in handlers]

    def init_settings(self) -> dict:  # start() runs the server loop: the settings are read before it
        settings = super().init_settings()
        settings["pruneviz_max_visitors"] = self.max_visitors
        self.log.info("pruneviz: at most %d concurrent visitors (PRUNEVIZ_MAX_VISITORS / --max-visitors)",
                      self.max_visitors)
        return settings


def main(argv: list[str] | None = None) -> None:
    """Run the app's server; ``--max-visitors=N`` sets the bound, every other option is Voila's."""
    args = list(sys.argv[1:] if argv is None else argv)
    rest = []
    for a in args:
        if a.startswith("--max-visitors="):
            value = a.split("=", 1)[1]
            try:
                PrunevizVoila.max_visitors = max(1, int(value))
            except ValueError:
                sys.exit(f"--max-visitors={value!r}: give a whole number of visitors (at least 1).")
        else:
            rest.append(a)
    PrunevizVoila.launch_instance(rest)


if __name__ == "__main__":
    main()
