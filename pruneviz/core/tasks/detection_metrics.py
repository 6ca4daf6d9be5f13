"""COCO average precision for boxes, computed here for the live loop.

``torchmetrics.detection.MeanAveragePrecision`` is the reference (the tests check that both agree to 1e-6 on
the same predictions), but it costs ~3 s to import and rebuilds COCO objects on every call; the live loop
needs mAP after every chunk. So this module follows pycocotools' ``COCOeval`` step for step, for the case
pruneviz evaluates (bounding boxes, no crowd annotations, the "all" area range, at most 100 detections per
image and class):

- per image and class, detections sorted by score (stable), the first 100 kept; IoU as pycocotools computes
  it (xywh, no +1, in float64, with ``w = x2 - x1`` taken in the boxes' own dtype as torchmetrics does);
- greedy matching per IoU threshold: each detection takes the unmatched ground truth of highest IoU >= t
  (the last one on ties);
- per class over all images: detections sorted by score (stable), cumulative TP/FP, precision made monotone
  from the right, sampled at 101 recall thresholds; AP = their mean; mAP = the mean over classes that have
  ground truth. The IoU and recall thresholds are torchmetrics' own (float32 linspace values), so the
  matching and the recall sampling see exactly the same numbers.

Matching is per image, so it is done once when an image's predictions arrive; a progressive result only
re-runs the cheap accumulation over the images seen so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: torchmetrics' defaults, computed the same way (float32 linspace values)
IOU_THRESHOLDS = np.array(torch.linspace(0.5, 0.95, round((0.95 - 0.5) / 0.05) + 1).tolist(), dtype=np.float64)
REC_THRESHOLDS = np.array(torch.linspace(0.0, 1.00, round(1.00 / 0.01) + 1).tolist(), dtype=np.float64)
MAX_DETS = 100
#: the IoU at which an object counts as found in the gallery ("objects lost, boxes gained")
FOUND_IOU = 0.5


def xywh(boxes: np.ndarray) -> np.ndarray:
    """xyxy boxes as float64 (x, y, w, h), the width and height computed in the boxes' own dtype."""
    b = np.asarray(boxes)
    out = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1) if len(b) else b.reshape(0, 4)
    return out.astype(np.float64)


def coco_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of (D, 4) and (G, 4) xywh boxes, as pycocotools' ``bbIou`` computes it."""
    if len(d) == 0 or len(g) == 0:
        return np.zeros((len(d), len(g)))
    w = np.minimum(d[:, 0:1] + d[:, 2:3], (g[:, 0] + g[:, 2])[None]) - np.maximum(d[:, 0:1], g[:, 0][None])
    h = np.minimum(d[:, 1:2] + d[:, 3:4], (g[:, 1] + g[:, 3])[None]) - np.maximum(d[:, 1:2], g[:, 1][None])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


@dataclass
class ImageEval:
    """One image's matches: per class the kept detections' scores (sorted), TP flags per IoU threshold and the
    number of ground-truth boxes; plus what the gallery shows (objects found, false positives)."""

    per_class: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    n_gt: dict[int, int] = field(default_factory=dict)
    found: frozenset[int] = frozenset()
    false_positives: int = 0


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, gt_boxes: np.ndarray,
                gt_labels: np.ndarray, score_threshold: float = 0.3) -> ImageEval:
    """Match one image's detections to its ground truth (see the module docstring)."""
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    d_all, g_all = xywh(det_boxes), xywh(gt_boxes)
    scores_all = np.asarray(det_scores, dtype=np.float64)
    ev = ImageEval()
    found: set[int] = set()
    fps = 0
    for c in np.union1d(np.unique(det_labels), np.unique(gt_labels)).astype(np.int64):
        g_idx = np.flatnonzero(gt_labels == c)
        d_idx = np.flatnonzero(det_labels == c)
        d_idx = d_idx[np.argsort(-scores_all[d_idx], kind="mergesort")][:MAX_DETS]
        ious = coco_iou(d_all[d_idx], g_all[g_idx])
        n_t, n_d, n_g = len(thr), len(d_idx), len(g_idx)
        tp = np.zeros((n_t, n_d), dtype=bool)
        gtm = np.zeros((n_t, n_g), dtype=bool)
        first_match = np.full(n_d, -1)
        for k in range(n_d):
            row = ious[k]
            if n_g == 0 or row.max() < thr[0]:
                continue
            ok = (row[None, :] >= thr[:, None]) & ~gtm
            hit = ok.any(axis=1)
            if not hit.any():
                continue
            masked = np.where(ok, row[None, :], -1.0)
            j = n_g - 1 - masked[:, ::-1].argmax(axis=1)  # the last of the best
            t_hit = np.flatnonzero(hit)
            tp[t_hit, k] = True
            gtm[t_hit, j[t_hit]] = True
            if hit[0]:
                first_match[k] = g_idx[j[0]]
        if n_d or n_g:
            ev.per_class[int(c)] = (scores_all[d_idx], tp)
            ev.n_gt[int(c)] = n_g
        shown = scores_all[d_idx] >= score_threshold
        found.update(int(g) for g in first_match[shown] if g >= 0)
        fps += int((shown & (first_match < 0)).sum())
    ev.found, ev.false_positives = frozenset(found), fps
    return ev


def _class_curves(images: list[ImageEval], c: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """All images' detections of class ``c`` in score order: (TP flags (T, D), image index (D,), #gt)."""
    scores, tps, owner = [], [], []
    n_gt = 0
    for i, ev in enumerate(images):
        n_gt += ev.n_gt.get(c, 0)
        entry = ev.per_class.get(c)
        if entry is not None and len(entry[0]):
            scores.append(entry[0])
            tps.append(entry[1])
            owner.append(np.full(len(entry[0]), i))
    if n_gt == 0:
        return None
    if not scores:
        return np.zeros((len(IOU_THRESHOLDS), 0), dtype=bool), np.zeros(0, dtype=np.int64), n_gt
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="mergesort")
    return np.concatenate(tps, axis=1)[:, order], np.concatenate(owner)[order], n_gt


def _interpolated_ap(tp: np.ndarray, fp: np.ndarray, n_gt: float) -> np.ndarray:
    """AP per row of cumulative TP/FP counts (rows: IoU thresholds or bootstrap replicates)."""
    n_d = tp.shape[1]
    if n_d == 0:
        return np.zeros(tp.shape[0])
    rc = tp / n_gt
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    out = np.empty(tp.shape[0])
    for r in range(tp.shape[0]):
        idx = np.searchsorted(rc[r], REC_THRESHOLDS, side="left")
        out[r] = np.where(idx < n_d, pr[r][np.minimum(idx, n_d - 1)], 0.0).mean()
    return out


def average_precision(images: list[ImageEval], num_classes: int) -> np.ndarray:
    """AP per IoU threshold and class, shape (10, num_classes); NaN for classes without ground truth."""
    ap = np.full((len(IOU_THRESHOLDS), num_classes), np.nan)
    for c in range(num_classes):
        curves = _class_curves(images, c)
        if curves is None:
            continue
        tps, _, n_gt = curves
        tp = np.cumsum(tps, axis=1, dtype=np.float64)
        fp = np.cumsum(~tps, axis=1, dtype=np.float64)
        ap[:, c] = _interpolated_ap(tp, fp, n_gt)
    return ap


def bootstrap_map50(images: list[ImageEval], num_classes: int, replicates: int = 200,
                    seed: int = 0) -> tuple[float, float] | None:
    """A 95 % percentile interval for mAP@0.5 over images resampled with replacement (seeded: the same
    predictions give the same interval)."""
    n = len(images)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)  # (B, n)
    per_class = []
    for c in range(num_classes):
        curves = _class_curves(images, c)
        if curves is None:
            continue
        tps, owner, _ = curves
        gt_w = weights @ np.array([ev.n_gt.get(c, 0) for ev in images], dtype=np.float64)  # (B,)
        w = weights[:, owner]  # (B, D)
        tp = np.cumsum(w * tps[0][None, :], axis=1)
        fp = np.cumsum(w * ~tps[0][None, :], axis=1)
        ap = np.zeros(replicates)
        ok = gt_w > 0
        if ok.any():
            ap[ok] = _interpolated_ap(tp[ok], fp[ok], gt_w[ok][:, None])
        per_class.append(np.where(ok, ap, np.nan))
    if not per_class:
        return None
    maps = np.nanmean(np.stack(per_class), axis=0)
    lo, hi = np.nanpercentile(maps, [2.5, 97.5])
    return float(lo), float(hi)
