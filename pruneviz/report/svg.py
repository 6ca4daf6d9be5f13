"""Small, dependency-free SVG charts for the report: lines with sd bands, intervals, heatmaps.

Inline SVG keeps ``report.html`` self-contained, small (tens of KB per chart set, no 4.8 MB plotly bundle),
printable and readable offline in any browser.
"""

from __future__ import annotations

import html
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
PALETTE = {
    "magnitude": "#2563eb", "random": "#6b7280", "saliency": "#f59e0b", "taylor": "#16a34a",
    "l1_filter": "#9333ea", "l2_filter": "#db2777", "bn_scale": "#0891b2", "lamp": "#dc2626", "wanda": "#854d0e",
}
EXTRA = ("#0f766e", "#7c3aed", "#be123c", "#4d7c0f", "#1d4ed8")
DASHES = {"global": "", "layer": "6 3", "structured": "2 2"}


def color_of(name: str, order: Sequence[str] = ()) -> str:
    if name in PALETTE:
        return PALETTE[name]
    i = list(order).index(name) if name in order else zlib.crc32(name.encode())
    return EXTRA[i % len(EXTRA)]


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Series:
    """One line: points (x, y) with an optional sd band; ``dash`` an SVG dasharray ('' = solid)."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    sd: Sequence[float] = ()
    color: str = "#2563eb"
    dash: str = ""


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_tick(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


class _Frame:
    """Plot area geometry and the axes' scales."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
                 left: int = 52, right: int = 12, top: int = 30, bottom: int = 42) -> None:
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def sx(self, x: float) -> float:
        return self.l + (x - self.x0) / max(self.x1 - self.x0, 1e-12) * (self.w - self.l - self.r)

    def sy(self, y: float) -> float:
        return self.h - self.b - (y - self.y0) / max(self.y1 - self.y0, 1e-12) * (self.h - self.t - self.b)

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        out = [f'<rect x="{self.l}" y="{self.t}" width="{self.w - self.l - self.r}" '
               f'height="{self.h - self.t - self.b}" fill="#fff" stroke="#d1d5db"/>']
        for v in nice_ticks(self.x0, self.x1, 5):
            x = self.sx(v)
            out.append(f'<line x1="{x:.1f}" y1="{self.t}" x2="{x:.1f}" y2="{self.h - self.b}" stroke="#f1f5f9"/>')
            out.append(f'<text x="{x:.1f}" y="{self.h - self.b + 14}" text-anchor="middle">{_fmt_tick(v)}</text>')
        for v in nice_ticks(self.y0, self.y1, 5):
            y = self.sy(v)
            out.append(f'<line x1="{self.l}" y1="{y:.1f}" x2="{self.w - self.r}" y2="{y:.1f}" stroke="#f1f5f9"/>')
            out.append(f'<text x="{self.l - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(v)}</text>')
        cx = (self.l + self.w - self.r) / 2
        out.append(f'<text x="{cx:.1f}" y="{self.h - 8}" text-anchor="middle" fill="#374151">{esc(x_label)}</text>')
        cy = (self.t + self.h - self.b) / 2
        out.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" fill="#374151" '
                   f'transform="rotate(-90 14 {cy:.1f})">{esc(y_label)}</text>')
        out.append(f'<text x="{self.l}" y="18" font-weight="600" font-size="13" fill="#111827">{esc(title)}</text>')
        return out


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(label)}" font-family="{FONT}" font-size="11" fill="#4b5563">'
            + "".join(body) + "</svg>")


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, width: int = 440,
               height: int = 290, x_range: tuple[float, float] | None = (0, 100),
               y_range: tuple[float, float] | None = None, hline: tuple[float, str] | None = None,
               legend: bool = False) -> str:
    """Lines (markers at the points) with their sd bands; ``hline``: (value, label) drawn dashed."""
    xs = [v for s in series for v in s.x]
    ys = [v for s in series for v in s.y] + ([hline[0]] if hline else [])
    if x_range is None:
        x_range = (min(xs, default=0.0), max(xs, default=1.0))
    if y_range is None:
        lo, hi = min(ys, default=0.0), max(ys, default=1.0)
        pad = (hi - lo) * 0.05 or 0.5
        y_range = (lo - pad, hi + pad)
    f = _Frame(width, height, x_range, y_range)
    body = f.axes(title, x_label, y_label)
    clip = f"c{zlib.crc32(f'{title}|{x_label}|{y_label}|{len(series)}'.encode())}"
    body.append(f'<clipPath id="{clip}"><rect x="{f.l}" y="{f.t}" width="{f.w - f.l - f.r}" '
                f'height="{f.h - f.t - f.b}"/></clipPath><g clip-path="url(#{clip})">')
    if hline is not None:
        y = f.sy(hline[0])
        body.append(f'<line x1="{f.l}" y1="{y:.1f}" x2="{f.w - f.r}" y2="{y:.1f}" stroke="#111827" '
                    f'stroke-dasharray="3 3" stroke-width="1"/>')
        body.append(f'<text x="{f.l + 4}" y="{y + 12:.1f}" fill="#111827">{esc(hline[1])}</text>')
    for s in series:
        pts = [(f.sx(x), f.sy(y)) for x, y in zip(s.x, s.y, strict=True)]
        if s.sd and any(v > 0 for v in s.sd):
            upper = [(f.sx(x), f.sy(y + d)) for x, y, d in zip(s.x, s.y, s.sd, strict=True)]
            lower = [(f.sx(x), f.sy(y - d)) for x, y, d in zip(s.x, s.y, s.sd, strict=True)]
            poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
            body.append(f'<polygon points="{poly}" fill="{s.color}" fill-opacity="0.15" stroke="none"/>')
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        body.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.8"{dash}>'
                    f"<title>{esc(s.name)}</title></polyline>")
        body.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{s.color}"/>' for a, b in pts)
    body.append("</g>")
    if legend:  # lower left: where falling metric-vs-pruning curves leave room
        for i, s in enumerate(series):
            y = f.h - f.b - 10 - 14 * (len(series) - 1 - i)
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            body.append(f'<rect x="{f.l + 4}" y="{y - 11}" width="140" height="14" fill="#fff" fill-opacity="0.85"/>')
            body.append(f'<line x1="{f.l + 8}" y1="{y - 4}" x2="{f.l + 30}" y2="{y - 4}" '
                        f'stroke="{s.color}" stroke-width="2"{dash}/>')
            body.append(f'<text x="{f.l + 34}" y="{y}" fill="#111827">{esc(s.name)}</text>')
    return _svg(width, height, body, title)


def interval_chart(items: Sequence[tuple[str, float, float, float, str]], *, title: str, x_label: str,
                   width: int = 440, row: int = 18) -> str:
    """One row per item (label, mean, low, high, colour): a dot with its interval, and a line at 0."""
    height = 58 + row * len(items)
    vals = [v for _, m, lo, hi, _ in items for v in (m, lo, hi) if math.isfinite(v)] + [0.0]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or 1.0
    f = _Frame(width, height, (lo - pad, hi + pad), (0, len(items)), left=150, top=30, bottom=40)
    body = [f'<rect x="{f.l}" y="{f.t}" width="{f.w - f.l - f.r}" height="{f.h - f.t - f.b}" fill="#fff" '
            f'stroke="#d1d5db"/>']
    for v in nice_ticks(f.x0, f.x1, 5):
        x = f.sx(v)
        body.append(f'<line x1="{x:.1f}" y1="{f.t}" x2="{x:.1f}" y2="{f.h - f.b}" stroke="#f1f5f9"/>')
        body.append(f'<text x="{x:.1f}" y="{f.h - f.b + 14}" text-anchor="middle">{_fmt_tick(v)}</text>')
    x0 = f.sx(0)
    body.append(f'<line x1="{x0:.1f}" y1="{f.t}" x2="{x0:.1f}" y2="{f.h - f.b}" stroke="#111827" stroke-width="1"/>')
    for i, (label, m, a, b, color) in enumerate(items):
        y = f.t + row * (i + 0.5) + 4
        body.append(f'<text x="{f.l - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#111827">{esc(label)}</text>')
        if math.isfinite(a) and math.isfinite(b):
            body.append(f'<line x1="{f.sx(a):.1f}" y1="{y:.1f}" x2="{f.sx(b):.1f}" y2="{y:.1f}" stroke="{color}" '
                        'stroke-width="2"/>')
        if math.isfinite(m):
            body.append(f'<circle cx="{f.sx(m):.1f}" cy="{y:.1f}" r="4" fill="{color}"><title>{esc(label)}: '
                        f"{m:+.3g}</title></circle>")
    body.append(f'<text x="{(f.l + f.w - f.r) / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#374151">'
                f"{esc(x_label)}</text>")
    body.append(f'<text x="8" y="18" font-weight="600" font-size="13" fill="#111827">{esc(title)}</text>')
    return _svg(width, height, body, title)


def _blend(v: float, lo: float, hi: float) -> str:
    """White -> dark blue for v in [lo, hi]."""
    t = 0.0 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    a, b = (255, 255, 255), (30, 58, 138)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b, strict=True))


def heatmap(rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[float]], *, title: str,
            lo: float = 0.0, hi: float = 1.0, fmt: str = ".2f", cell: tuple[int, int] = (64, 22)) -> str:
    """A table of coloured cells with their values (NaN cells blank)."""
    cw, ch = cell
    left, top = 130, 64
    width, height = left + cw * len(cols) + 70, top + ch * len(rows) + 10  # room for the last slanted label
    body = [f'<text x="8" y="18" font-weight="600" font-size="13" fill="#111827">{esc(title)}</text>']
    for j, c in enumerate(cols):
        x = left + cw * (j + 0.5)
        body.append(f'<text x="{x:.1f}" y="{top - 8}" text-anchor="start" transform="rotate(-30 {x:.1f} {top - 8})" '
                    f'fill="#111827">{esc(c)}</text>')
    for i, r in enumerate(rows):
        y = top + ch * i
        body.append(f'<text x="{left - 6}" y="{y + ch / 2 + 4:.1f}" text-anchor="end" fill="#111827">{esc(r)}</text>')
        for j, v in enumerate(values[i]):
            x = left + cw * j
            if v is None or not math.isfinite(v):
                body.append(f'<rect x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="#f9fafb"/>')
                continue
            fill = _blend(v, lo, hi)
            ink = "#fff" if (v - lo) / max(hi - lo, 1e-12) > 0.55 else "#111827"
            body.append(f'<rect x="{x}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{fill}"/>')
            body.append(f'<text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" text-anchor="middle" fill="{ink}">'
                        f"{format(v, fmt)}</text>")
    return _svg(width, height, body, title)
