"""How the "what changed" gallery shows one sample, per kind of data: an image and its flipped label
(classification), an image with its boxes before -> after (detection). The view asks the renderer; it never
needs to know the task itself.

A renderer gives the gallery's header line, the order of the changed samples (most telling first) and, per
slot, a PNG (or None) and an HTML label. PNGs are small and drawn at native resolution (scaled up in the
browser with pixelated rendering), so an update costs a few kilobytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.evaluate import EvalResult
from .base import COLORS, esc

MAX_PNG_SIDE = 64
#: box colours per class (the gallery's legend follows the class order)
BOX_COLORS = ("#2563eb", "#f59e0b", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#65a30d", "#ea580c")


def is_image_batch(x: Any) -> bool:
    """4-D inputs with 1 or 3 channels (N, C, H, W) are shown as images."""
    return isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] in (1, 3) and x.shape[2] >= 4 and x.shape[3] >= 4


def _to_uint8(sample: torch.Tensor) -> np.ndarray:
    a = sample.detach().float().cpu()
    lo, hi = float(a.min()), float(a.max())
    if not (lo >= 0.0 and hi <= 1.0):  # not already an image in [0, 1]: per-image min-max scaling
        a = (a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
    return (a.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _image(sample: torch.Tensor):
    from PIL import Image

    arr = _to_uint8(sample)
    return Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def to_png(sample: torch.Tensor) -> tuple[bytes, int, int]:
    """One (C, H, W) sample as PNG bytes (per-image min-max scaling unless it is in [0, 1]), at most 64 px a
    side; and its size."""
    img = _image(sample)
    if max(img.size) > MAX_PNG_SIDE:
        img.thumbnail((MAX_PNG_SIDE, MAX_PNG_SIDE))
    return _png(img), img.size[0], img.size[1]


class Renderer:
    """Base: the gallery for one kind of sample. ``display_px``: a slot's width in the page; ``images``: the
    slots show a PNG; ``shows_samples``: the gallery has slots at all (else only its header line)."""

    display_px = 72
    images = True
    shows_samples = True

    def __init__(self, inputs: Any, targets: Any, class_names: Sequence[str]) -> None:
        self.inputs, self.targets = inputs, targets
        self.class_names = list(class_names)

    def name(self, c: int) -> str:
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(c)

    def header(self, r: EvalResult, base: EvalResult, shown: bool) -> str:
        raise NotImplementedError

    def order(self, r: EvalResult, base: EvalResult) -> np.ndarray:
        return np.asarray(r.changed if r.changed is not None else [], dtype=np.int64)

    def render(self, i: int, r: EvalResult, base: EvalResult) -> tuple[bytes | None, int, int, str]:
        """PNG (or None), its width and height, and the slot's HTML label."""
        raise NotImplementedError


class FlipRenderer(Renderer):
    """Classification: samples whose predicted class flipped, now-wrong first; images as small PNGs
    (``spectrogram``: drawn with low frequencies at the bottom, twice as wide)."""

    def __init__(self, inputs: Any, targets: Any, class_names: Sequence[str], spectrogram: bool = False) -> None:
        super().__init__(inputs, targets, class_names)
        self.images = self.shows_samples = is_image_batch(inputs)
        self.spectrogram = spectrogram
        if spectrogram:
            self.display_px = 128
        self._png: dict[int, tuple[bytes, int, int]] = {}

    def picture(self, i: int) -> tuple[bytes, int, int]:
        if i not in self._png:
            if len(self._png) > 64:
                self._png.clear()
            x = self.inputs[i]
            self._png[i] = to_png(x.flip(-2)) if self.spectrogram else to_png(x)
        return self._png[i]

    def label(self, i: int, r: EvalResult, base: EvalResult) -> str:
        b, a, t = int(base.predictions[i]), int(r.predictions[i]), int(self.targets[i])
        color = COLORS["good"] if a == t else COLORS["warn"]
        return (f'<span style="color:{color}"><b>{esc(self.name(b))} → {esc(self.name(a))}</b></span>'
                f'<br><span style="color:#6b7280">true {esc(self.name(t))}</span>')

    def _split(self, r: EvalResult, base: EvalResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        changed = super().order(r, base)
        y = self.targets.numpy()
        before, after = base.predictions[changed], r.predictions[changed]
        now_wrong = (before == y[changed]) & (after != y[changed])
        now_right = (before != y[changed]) & (after == y[changed])
        return changed, now_wrong, now_right

    def order(self, r: EvalResult, base: EvalResult) -> np.ndarray:
        changed, wrong, right = self._split(r, base)
        return np.concatenate([changed[wrong], changed[right], changed[~wrong & ~right]])

    def header(self, r: EvalResult, base: EvalResult, shown: bool) -> str:
        changed, wrong, right = self._split(r, base)
        if len(changed) == 0:
            return ('<span class="pv-help">No prediction has changed yet: prune more to see which samples '
                    "flip.</span>")
        return (f"<b>{len(changed)} of {r.total}</b> predictions flipped vs. unpruned "
                f'(<span style="color:{COLORS["warn"]}">{int(wrong.sum())} now wrong</span>, '
                f'<span style="color:{COLORS["good"]}">{int(right.sum())} now right</span>)'
                + (" · before → after:" if shown else ""))

    def render(self, i: int, r: EvalResult, base: EvalResult) -> tuple[bytes | None, int, int, str]:
        png, w, h = self.picture(i)
        return png, w, h, self.label(i, r, base)


class TextRenderer(FlipRenderer):
    """Text classification: the snippets whose prediction flipped, with their words."""

    display_px = 430
    MAX_CHARS = 160

    def __init__(self, inputs: Any, targets: Any, class_names: Sequence[str], text_of: Any) -> None:
        super().__init__(inputs, targets, class_names)
        self.images, self.shows_samples = False, True
        self.text_of = text_of

    def render(self, i: int, r: EvalResult, base: EvalResult) -> tuple[bytes | None, int, int, str]:
        text = str(self.text_of(i))
        if len(text) > self.MAX_CHARS:
            text = text[: self.MAX_CHARS].rsplit(" ", 1)[0] + " …"
        return None, 0, 0, (f'<div class="pv-text-sample">“{esc(text)}”</div>'
                            + self.label(i, r, base).replace("<br>", " · "))


class TableRenderer(FlipRenderer):
    """Tabular classification: the rows whose prediction flipped, with the features that weigh most in them:
    |z-score of the value| x the norm of the first layer's weights on that feature (now, pruned)."""

    display_px = 300
    TOP = 3

    def __init__(self, inputs: Any, targets: Any, class_names: Sequence[str], feature_names: Sequence[str],
                 weight_norms: Any) -> None:
        super().__init__(inputs, targets, class_names)
        self.images, self.shows_samples = False, True
        x = inputs.double()
        self.z = ((x - x.mean(0)) / x.std(0).clamp_min(1e-12)).float()
        self.feature_names = list(feature_names)
        self.weight_norms = weight_norms  # () -> per-feature weight norms of the first layer, or None

    def render(self, i: int, r: EvalResult, base: EvalResult) -> tuple[bytes | None, int, int, str]:
        norms = self.weight_norms()
        z = self.z[i]
        weight = z.abs() * (norms if norms is not None else 1.0)
        top = torch.argsort(weight, descending=True)[: self.TOP].tolist()
        rows = "".join(
            f"<tr><td>{esc(self.feature_names[j] if j < len(self.feature_names) else f'feature {j}')}</td>"
            f"<td class='pv-num'>{float(self.inputs[i][j]):.4g}</td>"
            f"<td class='pv-num' style='color:#6b7280'>z {float(z[j]):+.1f}</td></tr>" for j in top)
        return None, 0, 0, (f"{self.label(i, r, base).replace('<br>', ' · ')}"
                            f"<table class='pv-row-sample'>{rows}</table>")


class BoxRenderer(Renderer):
    """Detection: images where an object was lost or a false box appeared; before | after, boxes drawn."""

    display_px = 200
    SCALE = 2

    def __init__(self, inputs: Any, targets: Any, class_names: Sequence[str], score_threshold: float) -> None:
        super().__init__(inputs, targets, class_names)
        self.threshold = float(score_threshold)
        self.images = True

    @staticmethod
    def _diff(i: int, r: EvalResult, base: EvalResult) -> tuple[frozenset[int], int]:
        lost = base.details["found"][i] - r.details["found"][i]
        gained = max(0, r.details["false_positives"][i] - base.details["false_positives"][i])
        return lost, gained

    def order(self, r: EvalResult, base: EvalResult) -> np.ndarray:
        changed = super().order(r, base)
        keys = [(-len(self._diff(int(i), r, base)[0]), -self._diff(int(i), r, base)[1]) for i in changed]
        return changed[np.lexsort(np.array(keys).T[::-1])] if len(changed) else changed

    def header(self, r: EvalResult, base: EvalResult, shown: bool) -> str:
        changed = super().order(r, base)
        if len(changed) == 0:
            return ('<span class="pv-help">No detection has changed yet: prune more to see which objects are '
                    "lost.</span>")
        lost = sum(len(self._diff(int(i), r, base)[0]) for i in changed)
        gained = sum(self._diff(int(i), r, base)[1] for i in changed)
        return (f"<b>{len(changed)} of {r.total}</b> images changed vs. unpruned "
                f'(<span style="color:{COLORS["warn"]}">{lost} objects lost</span>, '
                f'<span style="color:{COLORS["accent"]}">{gained} false boxes gained</span>, at score ≥ '
                f"{self.threshold:g})" + (" · unpruned | now:" if shown else ""))

    def _panel(self, i: int, pred: dict[str, np.ndarray], lost: frozenset[int]):
        from PIL import ImageDraw

        img = _image(self.inputs[i]).convert("RGB")
        img = img.resize((img.size[0] * self.SCALE, img.size[1] * self.SCALE), resample=0)
        draw = ImageDraw.Draw(img)
        s = self.SCALE
        gt = self.targets[i]
        for g in sorted(lost):
            x1, y1, x2, y2 = (float(v) * s for v in gt["boxes"][g])
            draw.rectangle([x1 - 1, y1 - 1, x2 + 1, y2 + 1], outline=COLORS["warn"], width=2)
        keep = pred["scores"] >= self.threshold
        for box, label in zip(pred["boxes"][keep], pred["labels"][keep], strict=True):
            x1, y1, x2, y2 = (float(v) * s for v in box)
            draw.rectangle([x1, y1, x2, y2], outline=BOX_COLORS[int(label) % len(BOX_COLORS)], width=1)
        return img

    def render(self, i: int, r: EvalResult, base: EvalResult) -> tuple[bytes | None, int, int, str]:
        from PIL import Image

        lost, gained = self._diff(i, r, base)
        before = self._panel(i, base.predictions[i], frozenset())
        after = self._panel(i, r.predictions[i], lost)
        gap = 6
        pair = Image.new("RGB", (before.size[0] * 2 + gap, before.size[1]), "white")
        pair.paste(before, (0, 0))
        pair.paste(after, (before.size[0] + gap, 0))
        gt_labels = self.targets[i]["labels"]
        names = ", ".join(esc(self.name(int(gt_labels[g]))) for g in sorted(lost))
        parts = []
        if lost:
            parts.append(f'<span style="color:{COLORS["warn"]}"><b>lost {len(lost)}</b>: {names}</span>')
        if gained:
            parts.append(f'<span style="color:{COLORS["accent"]}"><b>+{gained}</b> false box'
                         f'{"es" if gained > 1 else ""}</span>')
        if not parts:
            parts.append('<span style="color:#6b7280">boxes moved</span>')
        return _png(pair), pair.size[0], pair.size[1], " · ".join(parts)


SHOW = ("image", "spectrogram", "text", "table")


def make_renderer(task_name: str, inputs: Any, targets: Any, class_names: Sequence[str], *,
                  score_threshold: float = 0.3, show: str | None = None, text_of: Any = None,
                  feature_names: Sequence[str] | None = None, weight_norms: Any = None) -> Renderer | None:
    """The gallery renderer for a task and its data (None: nothing to show per sample). ``show``: how a sample
    looks ("image", "spectrogram", "text" with ``text_of(i)``, "table" with ``feature_names``); None: images
    when the inputs are images."""
    if task_name == "detection" and is_image_batch(inputs) or (
            task_name == "detection" and isinstance(inputs, list) and inputs and is_image_batch(inputs[0][None])):
        return BoxRenderer(inputs, targets, class_names, score_threshold)
    if task_name != "classification":
        return None
    if show == "text" and text_of is not None:
        return TextRenderer(inputs, targets, class_names, text_of)
    if show == "table" and isinstance(inputs, torch.Tensor) and inputs.dim() == 2:
        names = list(feature_names or [f"feature {j}" for j in range(inputs.shape[1])])
        return TableRenderer(inputs, targets, class_names, names, weight_norms or (lambda: None))
    return FlipRenderer(inputs, targets, class_names, spectrogram=show == "spectrogram")
