"""Browser downloads from the kernel: the bytes travel as a websocket buffer and the browser saves them with
the name the app chose. In the app nothing a visitor types ever becomes a path on the server: files go to the
visitor's own machine."""

from __future__ import annotations

import re

import anywidget
import traitlets

#: file names the app gives its downloads: letters, digits, dot, dash, underscore
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, default: str = "pruneviz-export") -> str:
    """``name`` reduced to a plain file name (no folders, no dots in front, at most 80 characters)."""
    base = _SAFE.sub("-", str(name).replace("\\", "/").rsplit("/", 1)[-1]).strip(".-") or default
    return base[:80]


class Downloader(anywidget.AnyWidget):
    """An invisible widget; :meth:`send_file` makes the browser save ``data`` as ``name`` (class ``pv-downloader``).

    ``sent``: (name, size) of every file sent, for tests and the app's own message.
    """

    _esm = """
export default {
  render({ model, el }) {
    const onMsg = (msg, buffers) => {
      if (!msg || msg.event !== "download" || !buffers || !buffers.length) return;
      const blob = new Blob([buffers[0]], { type: msg.mime || "application/octet-stream" });
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = msg.name;
      a.style.display = "none";
      el.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
    };
    model.on("msg:custom", onMsg);
    return () => model.off("msg:custom", onMsg);
  }
};
"""
    count = traitlets.Int(0).tag(sync=True)

    def __init__(self) -> None:
        super().__init__(layout={"width": "0px", "height": "0px", "overflow": "hidden"})
        self.add_class("pv-downloader")
        self.sent: list[tuple[str, int]] = []

    def send_file(self, name: str, data: bytes, mime: str = "application/octet-stream") -> str:
        """Send ``data`` to the browser to be saved as ``name`` (made safe); returns the name used."""
        name = safe_name(name)
        self.send({"event": "download", "name": name, "mime": mime}, buffers=[memoryview(bytes(data))])
        self.sent.append((name, len(data)))
        self.count += 1
        return name
