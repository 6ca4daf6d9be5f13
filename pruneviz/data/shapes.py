"""A deterministic synthetic object-detection set: coloured shapes on cluttered, noisy backgrounds.

Each image (3 x size x size, float32 in [0, 1]) holds 1-5 objects (circle, square, triangle, cross;
8-24 px) on a two-colour gradient with clutter that is not an object (thin lines, soft blobs) and
Gaussian noise. Objects may touch or overlap a little but never hide each other. Targets follow
torchvision's detection convention: ``{"boxes": float32 (k, 4) xyxy pixels, "labels": int64 (k,)}``.
Generation is vectorised over images (1,000 images in about a second on one core) and a given
seed gives identical tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

__all__ = ["SHAPES_CLASSES", "SPLIT_SIZES", "ShapesSet", "make_shapes", "load_shapes_split"]

#: Class names; a label is the index into this tuple.
SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

#: Number of images of each split returned by :func:`load_shapes_split`.
SPLIT_SIZES: dict[str, int] = {"train": 2000, "test": 300}

_MAX_OBJECTS = 5
_MIN_SIDE, _MAX_SIDE = 8.0, 24.0
_PLACEMENT_TRIES = 12
_MAX_OVERLAP = 0.15  # intersection / smaller box area allowed between two objects
_OBJECT_WINDOW, _BLOB_WINDOW, _PAD = 28, 24, 16


@dataclass(frozen=True, eq=False)
class ShapesSet:
    """Images ``(N, 3, size, size)`` in [0, 1] and one target dict per image."""

    images: Tensor
    targets: list[dict[str, Tensor]]
    classes: tuple[str, ...] = field(default=SHAPES_CLASSES)
    seed: int = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[i], self.targets[i]

    def batches(self, batch_size: int = 64) -> Iterator[tuple[Tensor, list[dict[str, Tensor]]]]:
        """Yield ``(images (B, 3, H, W), targets)`` in order; the last batch may be smaller."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
        for i in range(0, len(self), int(batch_size)):
            yield self.images[i : i + batch_size], self.targets[i : i + batch_size]


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def _place(gen: torch.Generator, n: int, count: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sample centres and sides of up to 5 objects per image; boxes never overlap much.

    Returns ``centre (n, K, 2)``, ``side (n, K)`` and ``valid (n, K)``.
    """
    k_max = _MAX_OBJECTS
    centre = torch.zeros(n, k_max, 2)
    side = torch.zeros(n, k_max)
    valid = torch.zeros(n, k_max, dtype=torch.bool)
    for k in range(k_max):
        want = count > k
        placed = torch.zeros(n, dtype=torch.bool)
        for _ in range(_PLACEMENT_TRIES):
            s = _uniform(gen, (n,), _MIN_SIDE, _MAX_SIDE)
            c = torch.rand(n, 2, generator=gen) * (size - s)[:, None] + (s / 2)[:, None]
            lo, hi = c - (s / 2)[:, None], c + (s / 2)[:, None]
            ok = want & ~placed
            if k > 0:
                plo = centre[:, :k] - side[:, :k, None] / 2
                phi = centre[:, :k] + side[:, :k, None] / 2
                inter = (torch.minimum(hi[:, None], phi) - torch.maximum(lo[:, None], plo)).clamp(min=0)
                inter = inter.prod(-1)
                smaller = torch.minimum(s[:, None], side[:, :k]) ** 2
                clash = (inter / smaller > _MAX_OVERLAP) & valid[:, :k]
                ok &= ~clash.any(1)
            centre[ok, k], side[ok, k] = c[ok], s[ok]
            placed |= ok
            if bool((placed | ~want).all()):
                break
        valid[:, k] = placed
    return centre, side, valid


def _shape_masks(kind: Tensor, centre: Tensor, side: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """Coverage (n, H, W) in [0, 1] of one object per image (anti-aliased by 1 px)."""
    cx, cy = centre[:, 0, None, None], centre[:, 1, None, None]
    h = (side / 2)[:, None, None]
    dx, dy = xs - cx, ys - cy
    # signed "outside distance" of each shape (<= 0 inside), in pixels
    circle = torch.sqrt(dx**2 + dy**2) - h
    square = torch.maximum(dx.abs(), dy.abs()) - h
    half_w = (ys - (cy - h)) / 2  # isosceles triangle, apex on top, base = side
    tri = torch.maximum(dx.abs() - half_w, (dy.abs() - h)) * 0.9
    t = h / 3
    arm_h = torch.maximum(dx.abs() - h, dy.abs() - t)
    arm_v = torch.maximum(dx.abs() - t, dy.abs() - h)
    cross = torch.minimum(arm_h, arm_v)
    dist = torch.stack([circle, square, tri, cross])  # (4, n, H, W)
    dist = dist.gather(0, kind[None, :, None, None].expand(1, *dist.shape[1:]))[0]
    return (0.5 - dist).clamp(0, 1)


def _window(centre: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel-centre coordinates ``x (m, 1, w)``, ``y (m, w, 1)`` of a window around each centre, and
    the window's integer origin (m, 2) in image pixels."""
    origin = centre.floor().long() - width // 2
    steps = torch.arange(width, dtype=torch.float32) + 0.5
    wx = (origin[:, 0, None, None] + steps[None, None, :]).float()
    wy = (origin[:, 1, None, None] + steps[None, :, None]).float()
    return wx, wy, origin


def _paint(canvas: Tensor, rows: Tensor, origin: Tensor, alpha: Tensor, colour: Tensor) -> None:
    """Blend ``colour`` (m, 3) with coverage ``alpha`` (m, w, w) into windows of the padded canvas."""
    width = alpha.shape[-1]
    steps = torch.arange(width)
    yy = (origin[:, 1, None, None] + _PAD + steps[None, :, None]).expand(-1, width, width)
    xx = (origin[:, 0, None, None] + _PAD + steps[None, None, :]).expand(-1, width, width)
    bb = rows[:, None, None].expand(-1, width, width)
    patch = canvas[bb, :, yy, xx]  # (m, w, w, 3)
    canvas[bb, :, yy, xx] = patch + alpha[..., None] * (colour[:, None, None, :] - patch)


def _contrasting(gen: torch.Generator, base: Tensor) -> Tensor:
    """Random colours (n, 3) at least 0.45 (Euclidean RGB) away from ``base`` (n, 3)."""
    colour = torch.rand(base.shape, generator=gen)
    for _ in range(4):
        close = (colour - base).norm(dim=1) < 0.45
        if not bool(close.any()):
            break
        colour[close] = torch.where(base[close] > 0.5, colour[close] * 0.4, 0.6 + 0.4 * colour[close])
    return colour


def make_shapes(n: int, seed: int, size: int = 64) -> ShapesSet:
    """Generate ``n`` images of ``size`` x ``size`` px with 1-5 shapes each, deterministically from ``seed``."""
    n, size = int(n), int(size)
    if n < 0 or size < 32:
        raise ValueError(f"make_shapes needs n >= 0 and size >= 32, got n={n}, size={size}.")
    gen = torch.Generator().manual_seed(int(seed))
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = coords[None, :, None], coords[None, None, :]

    # background: a linear gradient between two colours in a random direction
    c0 = torch.rand(n, 3, generator=gen)
    c1 = (c0 + _uniform(gen, (n, 3), -0.35, 0.35)).clamp(0, 1)
    angle = _uniform(gen, (n,), 0, 2 * torch.pi)
    ramp = (xs - size / 2) * angle.cos()[:, None, None] + (ys - size / 2) * angle.sin()[:, None, None]
    ramp = (ramp / size + 0.5).clamp(0, 1)[:, None]  # (n, 1, H, W)
    images = c0[:, :, None, None] * (1 - ramp) + c1[:, :, None, None] * ramp
    mean_bg = (c0 + c1) / 2

    # clutter: thin line segments and small soft blobs (not objects)
    for _ in range(3):
        p = torch.rand(n, 2, 2, generator=gen) * size
        on = torch.rand(n, generator=gen) < 0.8
        a, b = p[:, 0, :, None, None], p[:, 1, :, None, None]
        ab = b - a
        tpar = ((xs - a[:, 0]) * ab[:, 0] + (ys - a[:, 1]) * ab[:, 1]) / (ab**2).sum(1).clamp(min=1e-6)
        tpar = tpar.clamp(0, 1)
        d = torch.sqrt((xs - a[:, 0] - tpar * ab[:, 0]) ** 2 + (ys - a[:, 1] - tpar * ab[:, 1]) ** 2)
        alpha = ((1.0 - d).clamp(0, 1) * on[:, None, None])[:, None]
        colour = torch.rand(n, 3, generator=gen)[:, :, None, None]
        images = images * (1 - alpha) + colour * alpha
    # blobs and objects are painted into small windows of a padded canvas (6x fewer pixels)
    canvas = torch.nn.functional.pad(images, (_PAD, _PAD, _PAD, _PAD))
    rows = torch.arange(n)
    for _ in range(2):
        c = torch.rand(n, 2, generator=gen) * size
        r = _uniform(gen, (n,), 1.5, 3.5)[:, None, None]
        on = torch.rand(n, generator=gen) < 0.7
        colour = torch.rand(n, 3, generator=gen)
        wx, wy, origin = _window(c[on], _BLOB_WINDOW)
        d2 = (wx - c[on, 0, None, None]) ** 2 + (wy - c[on, 1, None, None]) ** 2
        _paint(canvas, rows[on], origin, torch.exp(-d2 / (2 * r[on] ** 2)) * 0.8, colour[on])

    # objects
    count = torch.randint(1, _MAX_OBJECTS + 1, (n,), generator=gen)
    centre, side, valid = _place(gen, n, count, size)
    kinds = torch.randint(0, len(SHAPES_CLASSES), (n, _MAX_OBJECTS), generator=gen)
    for k in range(_MAX_OBJECTS):
        colour = _contrasting(gen, mean_bg)
        on = valid[:, k]
        wx, wy, origin = _window(centre[on, k], _OBJECT_WINDOW)
        alpha = _shape_masks(kinds[on, k], centre[on, k], side[on, k], wx, wy)
        _paint(canvas, rows[on], origin, alpha, colour[on])
    images = canvas[:, :, _PAD : _PAD + size, _PAD : _PAD + size]

    sigma = _uniform(gen, (n, 1, 1, 1), 0.01, 0.05)
    images = (images + torch.randn(images.shape, generator=gen) * sigma).clamp(0, 1).contiguous()

    half = (side / 2)[..., None]
    boxes = torch.cat([centre - half, centre + half], dim=-1).clamp(0, size)  # (n, K, 4)
    targets = [
        {"boxes": boxes[i][valid[i]].float().contiguous(), "labels": kinds[i][valid[i]].to(torch.int64)}
        for i in range(n)
    ]
    return ShapesSet(images=images.float(), targets=targets, classes=SHAPES_CLASSES, seed=int(seed))


@lru_cache(maxsize=4)
def load_shapes_split(split: Literal["train", "test"], seed: int = 0) -> ShapesSet:
    """The fixed ``"train"`` (2,000 images) or ``"test"`` (300) split; cached, so treat it as read-only.

    The two splits come from different seeds derived from ``seed`` (``2 * seed + 1`` and ``2 * seed + 2``).
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"Unknown shapes split {split!r}; use 'train' or 'test'.")
    offset = 1 if split == "train" else 2
    return make_shapes(SPLIT_SIZES[split], seed=2 * int(seed) + offset, size=64)
