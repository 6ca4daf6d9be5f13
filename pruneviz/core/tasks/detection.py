"""Object detection: images in, one dict of boxes per image out (torchvision's convention).

Targets: one dict per image, ``{"boxes": (k, 4) xyxy pixels, "labels": (k,) int}``. Outputs: one dict per
image, ``{"boxes", "scores", "labels"}``. Metrics: mAP@0.5 (the headline, with a bootstrap interval over
images), mAP@[.5:.95] and mAP@0.75 (COCO), AP per class; ``changed`` = the images where an object was lost or
a false box appeared (at ``score_threshold``). Training loss: in train mode the model returns a dict of losses
for (images, targets), as torchvision detectors do; their sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batches import Batch, Samples, describe
from ..errors import EvaluationError
from ..results import EvalResult
from .base import Accumulator, LossFn, MetricFn, OutputSpec, Task
from .detection_metrics import ImageEval, average_precision, bootstrap_map50, match_image

PRED_KEYS = ("boxes", "scores", "labels")


def is_box_dicts(obj: Any, keys: tuple[str, ...] = ("boxes", "labels")) -> bool:
    return isinstance(obj, list | tuple) and len(obj) > 0 and all(
        isinstance(d, Mapping) and all(k in d for k in keys) for d in obj)


def detector_classes(model: nn.Module | None) -> int | None:
    """The number of classes a detector predicts, where it says (``num_classes``, torchvision's heads)."""
    if model is None:
        return None
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    for path in ("roi_heads.box_predictor.cls_score.out_features", "head.classification_head.num_classes",
                 "head.classification_head.num_columns"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, int):
            return obj
    return None


def _image_sizes(inputs: Any) -> list[tuple[int, int]] | None:
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return [(int(inputs.shape[2]), int(inputs.shape[3]))] * int(inputs.shape[0])
    if isinstance(inputs, list) and all(isinstance(x, torch.Tensor) and x.dim() == 3 for x in inputs):
        return [(int(x.shape[1]), int(x.shape[2])) for x in inputs]
    return None


def check_targets(targets: Any, sizes: list[tuple[int, int]] | None, num_classes: int | None) -> list[dict]:
    """Validated detection targets as float32 boxes and int64 labels (clear errors naming the image)."""
    if not isinstance(targets, list) or not all(isinstance(t, Mapping) for t in targets):
        raise EvaluationError(
            f"detection targets must be a list with one dict per image, {{'boxes': (k, 4), 'labels': (k,)}}; got "
            f"{describe(targets)}.")
    out = []
    for i, t in enumerate(targets):
        missing = [k for k in ("boxes", "labels") if k not in t]
        if missing:
            raise EvaluationError(
                f"the target of image {i} has no {' and no '.join(repr(m) for m in missing)} (keys: "
                f"{sorted(map(str, t))}): each target needs 'boxes' (k, 4) in x1, y1, x2, y2 pixels and 'labels' (k,).")
        boxes = torch.as_tensor(t["boxes"])
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        labels = torch.as_tensor(t["labels"]).reshape(-1)
        if boxes.dim() != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels):
            raise EvaluationError(
                f"image {i}: boxes {describe(boxes)} and labels {describe(labels)} do not fit: expected boxes (k, 4) "
                "and labels (k,).")
        boxes = boxes.float()
        if not torch.isfinite(boxes).all():
            raise EvaluationError(f"image {i} has a NaN or infinite box: fix its annotation.")
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            b = boxes[int(bad.nonzero()[0])].tolist()
            raise EvaluationError(
                f"image {i} has a box with x2 < x1 or y2 < y1 ({[round(v, 2) for v in b]}): boxes are x1, y1, x2, y2 "
                "(convert xywh boxes with torchvision.ops.box_convert).")
        if sizes is not None and len(boxes):
            h, w = sizes[i]
            tol = 1.0
            outside = (boxes[:, 0] < -tol) | (boxes[:, 1] < -tol) | (boxes[:, 2] > w + tol) | (boxes[:, 3] > h + tol)
            if outside.any():
                b = boxes[int(outside.nonzero()[0])].tolist()
                raise EvaluationError(
                    f"image {i} ({w}x{h} pixels) has a box outside the image ({[round(v, 1) for v in b]}): boxes are "
                    "in pixels of the image as given to the model (rescale them with the image).")
        if labels.is_floating_point() or labels.is_complex():
            raise EvaluationError(f"image {i}: labels must be integer class ids, got {labels.dtype}.")
        labels = labels.long()
        if len(labels) and int(labels.min()) < 0:
            raise EvaluationError(f"image {i} has a negative label ({int(labels.min())}): labels are class ids >= 0.")
        if num_classes is not None and len(labels) and int(labels.max()) >= num_classes:
            raise EvaluationError(
                f"image {i} has label {int(labels.max())}, but the detector predicts {num_classes} classes (ids "
                f"0..{num_classes - 1}): the labels must use the model's class ids.")
        out.append({"boxes": boxes, "labels": labels})
    return out


def check_predictions(out: Any, n: int) -> list[dict[str, np.ndarray]]:
    """A detector's outputs for ``n`` images as numpy dicts, or a clear error."""
    if isinstance(out, torch.Tensor):
        raise EvaluationError(
            f"the detector returned a tensor ({describe(out)}), not one dict of boxes, scores and labels per image: "
            "decode its raw outputs in forward (eval mode), or pass output=fn that turns them into "
            "[{'boxes': (K, 4), 'scores': (K,), 'labels': (K,)}, ...].")
    if not isinstance(out, list | tuple) or len(out) != n or not all(isinstance(d, Mapping) for d in out):
        raise EvaluationError(
            f"the detector returned {describe(out)} for {n} images; expected a list of {n} dicts with "
            f"{', '.join(PRED_KEYS)}.")
    preds = []
    for i, d in enumerate(out):
        missing = [k for k in PRED_KEYS if k not in d]
        if missing:
            raise EvaluationError(f"the detector's output for image {i} has no {', '.join(missing)} (keys: "
                                  f"{sorted(map(str, d))}).")
        boxes = torch.as_tensor(d["boxes"]).detach().reshape(-1, 4).float()
        scores = torch.as_tensor(d["scores"]).detach().reshape(-1).float()
        labels = torch.as_tensor(d["labels"]).detach().reshape(-1).long()
        if not (len(boxes) == len(scores) == len(labels)):
            raise EvaluationError(f"the detector's output for image {i} has {len(boxes)} boxes, {len(scores)} scores "
                                  f"and {len(labels)} labels: they must pair up.")
        if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
            raise EvaluationError(
                f"the detector returned NaN or infinite boxes or scores for image {i}: its weights or inputs are "
                "broken (undo the last change, or check the input scaling).")
        preds.append({"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()})
    return preds


class DetectionTask(Task):
    """mAP@0.5 is the headline; ``score_threshold`` sets which boxes the gallery counts as shown."""

    name = "detection"
    metric, metric_label, percent = "map50", "mAP@0.5", False
    per_class_label = "AP@0.5"

    def __init__(self, *, output: OutputSpec = None, loss_fn: LossFn | None = None, metric_fn: MetricFn | None = None,
                 num_classes: int | None = None, score_threshold: float = 0.3) -> None:
        super().__init__(output=output, loss_fn=loss_fn, metric_fn=metric_fn)
        self.declared_classes = num_classes
        self.score_threshold = float(score_threshold)
        self.model_classes: int | None = None

    @staticmethod
    def recognises(probe: Any, targets: Any) -> bool:
        """A model that returns box dicts, or targets that are box dicts."""
        return is_box_dicts(probe, PRED_KEYS) or is_box_dicts(targets)

    def bind(self, probe: Any, samples: Samples, model: nn.Module | None = None) -> Samples:
        self.model_classes = self.declared_classes or detector_classes(model)
        targets = check_targets(samples.targets, _image_sizes(samples.inputs), self.model_classes)
        if not any(len(t["labels"]) for t in targets):
            raise EvaluationError("the detection targets hold no boxes at all: there is nothing to detect; check the "
                                  "annotations.")
        check_predictions(probe, len(probe) if isinstance(probe, list | tuple) else 1)
        top = max(int(t["labels"].max()) for t in targets if len(t["labels"]))
        self.num_classes = max(self.model_classes or 0, top + 1)
        self.total = len(targets)
        return Samples(samples.inputs, targets)

    def accumulator(self) -> Accumulator:
        return _DetectionAccumulator(self)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        images = list(inputs) if isinstance(inputs, torch.Tensor) else inputs
        was = model.training
        model.train()
        try:
            out = model(images, check_targets(targets, _image_sizes(images), None))
        finally:
            model.train(was)
        if not isinstance(out, Mapping) or not out:
            raise EvaluationError(
                f"in training mode the detector returned {describe(out)}, not a dict of losses: pruneviz trains "
                "detectors that follow torchvision's convention (model(images, targets) -> {'loss_name': loss}).")
        return sum(out.values())

    def loss_and_outputs(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
        return self.loss(model, batch), None

    def fmt(self, value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    def fmt_delta(self, value: float, base: float) -> str:
        return f"{value - base:+.3f}"


class _DetectionAccumulator(Accumulator):
    def __init__(self, task: DetectionTask) -> None:
        super().__init__(task)
        self.images: list[ImageEval] = []
        self.preds: list[dict[str, np.ndarray]] = []

    def add(self, out: Any, targets: list[dict]) -> None:
        preds = check_predictions(out, len(targets))
        super().add(out, targets)
        thr = self.task.score_threshold
        for p, t in zip(preds, targets, strict=True):
            self.images.append(match_image(p["boxes"], p["scores"], p["labels"], t["boxes"].numpy(),
                                           t["labels"].numpy(), thr))
        self.preds.extend(preds)

    def result(self, n: int, elapsed: float) -> EvalResult:
        task = self.task
        kwargs = self.common(n, elapsed)
        ap = average_precision(self.images, task.num_classes)
        with np.errstate(all="ignore"):
            per_class_50 = ap[0]
            per_class_map = np.nanmean(ap, axis=0) if ap.size else ap[0]
        has = ~np.isnan(per_class_50)
        map50 = float(per_class_50[has].mean()) if has.any() else 0.0
        map_all = float(per_class_map[has].mean()) if has.any() else 0.0
        map75 = float(ap[5][has].mean()) if has.any() else 0.0
        n_gt = sum(sum(ev.n_gt.values()) for ev in self.images)
        found = sum(len(ev.found) for ev in self.images)
        fps = sum(ev.false_positives for ev in self.images)
        kwargs.update(
            value=map50, value_ci=bootstrap_map50(self.images, task.num_classes),
            per_class=per_class_50, predictions=list(self.preds),
            metrics={"map50": map50, "map": map_all, "map75": map75, "found": found / max(n_gt, 1),
                     "false_positives": float(fps), **kwargs["metrics"]},
            details={"per_class_map": per_class_map, "found": [ev.found for ev in self.images],
                     "false_positives": [ev.false_positives for ev in self.images], "objects": n_gt},
        )
        base = task.baseline
        if base is not None and "found" in base.details:
            bf, bp = base.details["found"], base.details["false_positives"]
            kwargs["changed"] = np.array([i for i, ev in enumerate(self.images)
                                          if ev.found != bf[i] or ev.false_positives != bp[i]], dtype=np.int64)
        return EvalResult(**kwargs)
