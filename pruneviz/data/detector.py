"""The demo detector: a small CenterNet-style model for the shapes set, in torchvision's convention.

``ShapesDetector`` is a chain of ``nn.Sequential`` conv+BatchNorm2d+ReLU blocks (stride 4 overall) with
two 1x1 heads: a per-class centre heatmap (sigmoid, CenterNet focal loss) and the distances from a
centre cell to the box's left/top/right/bottom edges (in units of the stride, softplus, L1 + GIoU loss).
Like torchvision's detectors, ``model(images, targets)`` returns a dict of losses in training mode and
``model(images)`` a list of ``{"boxes", "scores", "labels"}`` dicts otherwise.

The committed checkpoint is written by ``python -m pruneviz.data.train_detector``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from ..core.errors import EvaluationError
from .models import CHECKPOINT_DIR, DemoCheckpointError
from .shapes import SHAPES_CLASSES

__all__ = [
    "DETECTOR_CHECKPOINT",
    "ShapesDetector",
    "detector_checkpoint_meta",
    "load_shapes_detector",
]

#: Path of the committed demo detector checkpoint.
DETECTOR_CHECKPOINT = CHECKPOINT_DIR / "shapes_detector.pt"
TRAIN_COMMAND = "python -m pruneviz.data.train_detector"
ARCH = "ShapesDetector"

Targets = Sequence[dict[str, Tensor]]


def _block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ShapesDetector(nn.Module):
    """CenterNet-style detector: 6 conv blocks (stride 4), heatmap head (C channels) and box head (4)."""

    stride = 4

    def __init__(
        self,
        num_classes: int = len(SHAPES_CLASSES),
        widths: Sequence[int] = (16, 32, 32, 64, 64, 64),
        max_detections: int = 100,
        score_threshold: float = 0.05,
    ) -> None:
        super().__init__()
        w = list(widths)
        if len(w) != 6:
            raise ValueError(f"ShapesDetector needs 6 widths, got {len(w)}.")
        self.num_classes = int(num_classes)
        self.max_detections = int(max_detections)
        self.score_threshold = float(score_threshold)
        self.backbone = nn.Sequential(
            _block(3, w[0]),
            _block(w[0], w[1], stride=2),
            _block(w[1], w[2]),
            _block(w[2], w[3], stride=2),
            _block(w[3], w[4], dilation=2),
            _block(w[4], w[5], dilation=2),
        )
        self.heatmap = nn.Conv2d(w[5], self.num_classes, 1)
        self.box = nn.Conv2d(w[5], 4, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1 (CenterNet)
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, 1.0)

    # ------------------------------------------------------------------ input and raw outputs

    @staticmethod
    def _as_batch(images: Tensor | Sequence[Tensor]) -> Tensor:
        expected = "expected a (N, 3, H, W) tensor or a list of (3, H, W) tensors of one size"
        if isinstance(images, Tensor):
            if images.dim() != 4 or images.shape[1] != 3:
                raise EvaluationError(
                    f"ShapesDetector got images of shape {tuple(images.shape)}; {expected}."
                )
            return images
        if isinstance(images, (list, tuple)) and images and all(isinstance(t, Tensor) for t in images):
            shapes = {tuple(t.shape) for t in images}
            if len(shapes) == 1 and len(next(iter(shapes))) == 3 and next(iter(shapes))[0] == 3:
                return torch.stack(list(images))
            raise EvaluationError(
                f"ShapesDetector got a list of images of shapes {sorted(shapes)}; {expected} "
                "(resize them to one size first)."
            )
        raise EvaluationError(f"ShapesDetector got {type(images).__name__} as images; {expected}.")

    def heads(self, images: Tensor) -> Tensor:
        """Raw head outputs ``(N, C + 4, H/4, W/4)``: heatmap logits, then box-distance logits."""
        features = self.backbone(images)
        return torch.cat([self.heatmap(features), self.box(features)], dim=1)

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Targets | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses ``{"heatmap", "box"}`` in training mode with targets, else one detection dict per image."""
        x = self._as_batch(images)
        out = self.heads(x)
        if self.training and targets is not None:
            return self.losses(out, targets, x.shape[-2:])
        return self.decode(out, x.shape[-2:])

    # ------------------------------------------------------------------ decoding

    def _distances(self, raw_box: Tensor) -> Tensor:
        return F.softplus(raw_box) * self.stride

    def decode(self, out: Tensor, image_size: Sequence[int]) -> list[dict[str, Tensor]]:
        """Detections from raw head outputs: 3x3 max-pool peaks, top-K above the score floor."""
        n, _, h, w = out.shape
        c = self.num_classes
        heat = torch.sigmoid(out[:, :c])
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        k = min(self.max_detections, c * h * w)
        scores, idx = peaks.reshape(n, -1).topk(k, dim=1)  # sorted, descending
        labels = idx // (h * w)
        cell = idx % (h * w)
        cy = (cell // w).to(out.dtype) * self.stride + self.stride / 2
        cx = (cell % w).to(out.dtype) * self.stride + self.stride / 2
        dist = self._distances(out[:, c:]).reshape(n, 4, h * w)
        dist = dist.gather(2, cell[:, None, :].expand(n, 4, k))  # (n, 4, k)
        img_h, img_w = float(image_size[0]), float(image_size[1])
        boxes = torch.stack(
            [
                (cx - dist[:, 0]).clamp(0, img_w),
                (cy - dist[:, 1]).clamp(0, img_h),
                (cx + dist[:, 2]).clamp(0, img_w),
                (cy + dist[:, 3]).clamp(0, img_h),
            ],
            dim=-1,
        )
        result = []
        for i in range(n):
            keep = scores[i] >= self.score_threshold
            result.append(
                {
                    "boxes": boxes[i][keep].float(),
                    "scores": scores[i][keep].float(),
                    "labels": labels[i][keep].to(torch.int64),
                }
            )
        return result

    # ------------------------------------------------------------------ training

    def _encode(self, targets: Targets, n: int, h: int, w: int, device: torch.device):
        """Gaussian centre heatmaps (n, C, h, w) and, per object, its batch index, cell and ltrb box."""
        if len(targets) != n:
            raise EvaluationError(f"ShapesDetector got {n} images but {len(targets)} targets; pass one each.")
        boxes, labels, batch = [], [], []
        for i, t in enumerate(targets):
            if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
                raise EvaluationError(
                    f"Target {i} is not a dict with 'boxes' (k, 4) and 'labels' (k,); got {type(t).__name__}."
                )
            b = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
            lab = torch.as_tensor(t["labels"], dtype=torch.int64, device=device).reshape(-1)
            if len(b) != len(lab):
                raise EvaluationError(f"Target {i} has {len(b)} boxes but {len(lab)} labels.")
            if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise EvaluationError(
                    f"Target {i} has labels outside 0..{self.num_classes - 1}: {lab.tolist()}."
                )
            boxes.append(b)
            labels.append(lab)
            batch.append(torch.full((len(lab),), i, dtype=torch.int64, device=device))
        boxes, labels, batch = torch.cat(boxes), torch.cat(labels), torch.cat(batch)
        s = self.stride
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / s
        gx = centre[:, 0].floor().clamp(0, w - 1).long()
        gy = centre[:, 1].floor().clamp(0, h - 1).long()
        size = (boxes[:, 2:] - boxes[:, :2]) / s  # in cells
        sigma = (size / 6).clamp(min=0.5)  # (m, 2)
        xs = torch.arange(w, device=device, dtype=torch.float32)
        ys = torch.arange(h, device=device, dtype=torch.float32)
        gauss = torch.exp(
            -((xs[None, None, :] - gx[:, None, None]) ** 2) / (2 * sigma[:, 0, None, None] ** 2)
            - ((ys[None, :, None] - gy[:, None, None]) ** 2) / (2 * sigma[:, 1, None, None] ** 2)
        )  # (m, h, w), exactly 1 at the centre cell
        heat = torch.zeros(n * self.num_classes, h * w, device=device)
        rows = (batch * self.num_classes + labels)[:, None].expand(-1, h * w)
        heat = heat.scatter_reduce(0, rows, gauss.reshape(-1, h * w), reduce="amax", include_self=True)
        cx_pix = (gx.float() + 0.5) * s
        cy_pix = (gy.float() + 0.5) * s
        cells = gy * w + gx
        return heat.reshape(n, self.num_classes, h, w), batch, cells, boxes, (cx_pix, cy_pix)

    def losses(self, out: Tensor, targets: Targets, image_size: Sequence[int]) -> dict[str, Tensor]:
        """CenterNet focal loss on the heatmap and L1 + GIoU loss on the boxes at the centre cells."""
        n, _, h, w = out.shape
        c = self.num_classes
        heat_gt, batch, cells, boxes, (cx, cy) = self._encode(targets, n, h, w, out.device)
        pred = torch.sigmoid(out[:, :c]).clamp(1e-4, 1 - 1e-4)
        pos = heat_gt.eq(1).float()
        neg_w = (1 - heat_gt) ** 4
        pos_loss = (torch.log(pred) * (1 - pred) ** 2 * pos).sum()
        neg_loss = (torch.log(1 - pred) * pred**2 * neg_w * (1 - pos)).sum()
        num_pos = pos.sum().clamp(min=1)
        heatmap_loss = -(pos_loss + neg_loss) / num_pos
        if len(batch) == 0:
            return {"heatmap": heatmap_loss, "box": out[:, c:].sum() * 0}
        dist = self._distances(out[:, c:]).reshape(n, 4, h * w)[batch, :, cells]  # (m, 4)
        pred_boxes = torch.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], dim=1)
        target_dist = torch.stack(
            [cx - boxes[:, 0], cy - boxes[:, 1], boxes[:, 2] - cx, boxes[:, 3] - cy], dim=1
        )
        l1 = F.l1_loss(dist / self.stride, target_dist / self.stride)
        giou = generalized_box_iou_loss(pred_boxes, boxes, reduction="mean")
        return {"heatmap": heatmap_loss, "box": 0.5 * l1 + 2.0 * giou}


# ---------------------------------------------------------------------- the committed checkpoint


def _read_checkpoint(path: Path) -> dict[str, Any]:
    hint = f"Rebuild the demo detector with `{TRAIN_COMMAND}`."
    if not path.is_file():
        raise DemoCheckpointError(f"Detector checkpoint {str(path)!r} not found. {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling / zip error means the file is unusable
        raise DemoCheckpointError(
            f"Detector checkpoint {str(path)!r} is corrupt or unreadable ({type(exc).__name__}). {hint}"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DemoCheckpointError(f"Detector checkpoint {str(path)!r} has no 'state_dict'. {hint}")
    if ckpt.get("arch") != ARCH:
        raise DemoCheckpointError(
            f"Detector checkpoint {str(path)!r} holds arch {ckpt.get('arch')!r}, expected {ARCH!r}. {hint}"
        )
    return ckpt


def load_shapes_detector(checkpoint: str | os.PathLike[str] | None = None) -> ShapesDetector:
    """The trained demo detector (eval mode) from the committed checkpoint or ``checkpoint``.

    A missing, corrupt or foreign file raises :class:`~pruneviz.data.models.DemoCheckpointError`.
    """
    path = Path(checkpoint) if checkpoint is not None else DETECTOR_CHECKPOINT
    ckpt = _read_checkpoint(path)
    meta = ckpt.get("meta", {}) if isinstance(ckpt.get("meta"), dict) else {}
    model = ShapesDetector(num_classes=len(meta.get("classes", SHAPES_CLASSES)))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise DemoCheckpointError(
            f"Detector checkpoint {str(path)!r} does not fit {ARCH}: {exc}. "
            f"Rebuild the demo detector with `{TRAIN_COMMAND}`."
        ) from exc
    return model.eval()


def detector_checkpoint_meta(checkpoint: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ``meta`` dict (seed, map50, map, epochs, ...) stored in the detector checkpoint."""
    path = Path(checkpoint) if checkpoint is not None else DETECTOR_CHECKPOINT
    return dict(_read_checkpoint(path).get("meta", {}))
