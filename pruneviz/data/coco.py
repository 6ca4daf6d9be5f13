"""A user's own COCO-format detection folder as a torch ``Dataset`` (no download, no pickles).

``CocoDetection(images_dir, annotations_json)`` reads a COCO *instances* JSON (``images``,
``annotations`` with ``bbox`` = [x, y, width, height] and ``category_id``, ``categories``) and yields
``(image float32 (3, H, W) in [0, 1], {"boxes": float32 (k, 4) xyxy pixels, "labels": int64 (k,)})``,
torchvision's detection convention. Labels are 0..C-1 in sorted category-id order; ``.classes`` holds
the names. The JSON is checked when the dataset is built, so a bad folder fails at once with a
:class:`DatasetError` naming the file, the record and the fix. Crowd annotations (``iscrowd: 1``) are
skipped, as torchvision's detection references do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..core.errors import PrunevizError

__all__ = ["CocoDetection", "DatasetError", "collate_detection"]

_TOLERANCE = 0.5  # px a box may exceed the image (rounding in exported annotations); it is clipped


class DatasetError(PrunevizError):
    """A dataset folder or annotation file that cannot be read as the expected format."""


def _size_arg(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise DatasetError(f"size must be an int or (height, width) of positive ints, got {size!r}.")
    return hw  # type: ignore[return-value]


class CocoDetection(Dataset):
    """Images in ``images_dir`` with the boxes of a COCO instances JSON.

    ``size`` (an int for a square, or ``(height, width)``) resizes every image and scales its boxes,
    so batches can be stacked into one tensor.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        annotations_json: str | os.PathLike[str],
        *,
        size: int | Sequence[int] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotations_json = Path(annotations_json)
        self.size = _size_arg(size)
        if not self.images_dir.is_dir():
            raise DatasetError(
                f"Images folder {str(self.images_dir)!r} does not exist; pass the folder of images."
            )
        if not self.annotations_json.is_file():
            raise DatasetError(
                f"Annotation file {str(self.annotations_json)!r} does not exist; pass a COCO instances JSON."
            )
        try:
            doc = json.loads(self.annotations_json.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"Annotation file {str(self.annotations_json)!r} is not valid JSON ({exc}); "
                "pass a COCO instances JSON."
            ) from exc
        self._parse(doc)

    # ------------------------------------------------------------------ parsing and checks

    def _fail(self, what: str) -> DatasetError:
        return DatasetError(f"{str(self.annotations_json)!r}: {what}")

    def _parse(self, doc: Any) -> None:
        keys = ("images", "annotations", "categories")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in keys):
            raise self._fail(
                "not a COCO instances file: it needs lists 'images', 'annotations' and 'categories' "
                "(export the dataset in COCO format)."
            )
        cats: dict[int, str] = {}
        for c in doc["categories"]:
            if not isinstance(c, dict) or not isinstance(c.get("id"), int):
                raise self._fail(f"category {c!r} has no integer 'id'.")
            cats[c["id"]] = str(c.get("name", c["id"]))
        if not cats:
            raise self._fail("'categories' is empty; list at least one category.")
        self.category_ids: list[int] = sorted(cats)
        self.classes: list[str] = [cats[i] for i in self.category_ids]
        label_of = {cid: i for i, cid in enumerate(self.category_ids)}

        root = self.images_dir.resolve()
        self._images: list[dict[str, Any]] = []
        index: dict[Any, int] = {}
        for im in doc["images"]:
            if (
                not isinstance(im, dict)
                or "id" not in im
                or not isinstance(im.get("file_name"), str)
                or not all(isinstance(im.get(k), int) and im[k] > 0 for k in ("width", "height"))
            ):
                raise self._fail(
                    f"image record {im!r} needs 'id', 'file_name' and positive int 'width', 'height'."
                )
            path = (root / im["file_name"]).resolve()
            if root not in path.parents:
                raise self._fail(
                    f"image {im['id']!r} file_name {im['file_name']!r} points outside {str(root)!r}; "
                    "use names relative to the images folder."
                )
            index[im["id"]] = len(self._images)
            self._images.append(
                {
                    "id": im["id"],
                    "path": path,
                    "width": im.get("width"),
                    "height": im.get("height"),
                    "boxes": [],
                    "labels": [],
                }
            )

        for ann in doc["annotations"]:
            if not isinstance(ann, dict):
                raise self._fail(f"annotation {ann!r} is not an object.")
            aid = ann.get("id", "?")
            if ann.get("image_id") not in index:
                raise self._fail(
                    f"annotation {aid!r} refers to image_id {ann.get('image_id')!r}, not in 'images'."
                )
            if ann.get("category_id") not in label_of:
                raise self._fail(
                    f"annotation {aid!r} has unknown category_id {ann.get('category_id')!r}; "
                    f"known ids: {self.category_ids}."
                )
            if ann.get("iscrowd", 0):
                continue
            rec = self._images[index[ann["image_id"]]]
            bbox = ann.get("bbox")
            if (
                not isinstance(bbox, (list, tuple))
                or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)
            ):
                raise self._fail(f"annotation {aid!r} bbox {bbox!r} is not 4 numbers [x, y, width, height].")
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                raise self._fail(f"annotation {aid!r} bbox {bbox!r} has non-positive width or height.")
            iw, ih = rec["width"], rec["height"]
            if x < -_TOLERANCE or y < -_TOLERANCE or x + w > iw + _TOLERANCE or y + h > ih + _TOLERANCE:
                raise self._fail(
                    f"annotation {aid!r} bbox {bbox!r} lies outside its image {iw}x{ih}; "
                    "fix the box or the image's width/height."
                )
            rec["boxes"].append([x, y, x + w, y + h])
            rec["labels"].append(label_of[ann["category_id"]])

        for rec in self._images:
            if not rec["path"].is_file():
                raise DatasetError(
                    f"Image file {str(rec['path'])!r} (image id {rec['id']!r}) is missing from "
                    f"{str(root)!r}; add it or remove its record from the JSON."
                )

    # ------------------------------------------------------------------ items

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        from PIL import Image  # lazy: only when images are read

        rec = self._images[i]
        try:
            with Image.open(rec["path"]) as im:
                im = im.convert("RGB")
                w0, h0 = im.size
                if self.size is not None:
                    im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError) as exc:  # missing, truncated or not an image
            raise DatasetError(
                f"Cannot read image {str(rec['path'])!r} (image id {rec['id']!r}): {exc}."
            ) from exc
        if (w0, h0) != (rec["width"], rec["height"]):
            raise DatasetError(
                f"Image {str(rec['path'])!r} is {w0}x{h0} but the JSON says {rec['width']}x{rec['height']}; "
                "fix the image's width/height in the JSON."
            )
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)
        boxes = torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w0)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h0)
        if self.size is not None:
            scale = torch.tensor([self.size[1] / w0, self.size[0] / h0] * 2)
            boxes = boxes * scale
        return image, {"boxes": boxes, "labels": torch.tensor(rec["labels"], dtype=torch.int64)}


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]],
) -> tuple[Tensor | list[Tensor], list[dict[str, Tensor]]]:
    """``DataLoader`` collate: images stacked if they share one size (else a list), targets as a list."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if images and len({tuple(t.shape) for t in images}) == 1:
        return torch.stack(images), targets
    return images, targets
