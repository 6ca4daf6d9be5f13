"""Train the demo shapes detector deterministically on CPU and write its checkpoint.

Usage: ``python -m pruneviz.data.train_detector [--seed 0] [--epochs N] [--out PATH]``

Trains :class:`~pruneviz.data.detector.ShapesDetector` on the shapes train split (Adam, linear warm-up
then cosine learning rate, random horizontal flips) on one thread with deterministic algorithms, then
measures COCO mAP on the test split with ``torchmetrics`` (``faster_coco_eval`` backend) and writes
``{"arch", "state_dict", "meta"}`` atomically. Takes about a minute on a laptop core.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .detector import ARCH, DETECTOR_CHECKPOINT, ShapesDetector
from .shapes import SHAPES_CLASSES, ShapesSet, load_shapes_split
from .train_demo import save_checkpoint

__all__ = ["TRAIN_CONFIG", "evaluate_map", "train_detector", "main"]

#: Training hyper-parameters of the committed checkpoint.
TRAIN_CONFIG: dict[str, Any] = {"epochs": 6, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4, "warmup": 50}


@torch.no_grad()
def evaluate_map(model: nn.Module, data: ShapesSet, batch_size: int = 100) -> dict[str, float]:
    """COCO bbox mAP of ``model`` (put in eval mode) on ``data``: ``{"map", "map50", "map75"}``."""
    from torchmetrics.detection import MeanAveragePrecision  # ~3 s to import: only when measuring

    model.eval()
    metric = MeanAveragePrecision(backend="faster_coco_eval", iou_type="bbox")
    for images, targets in data.batches(batch_size):
        metric.update(model(images), list(targets))
    res = metric.compute()
    return {"map": float(res["map"]), "map50": float(res["map_50"]), "map75": float(res["map_75"])}


def _flip(images: Tensor, targets: list[dict[str, Tensor]], flip: Tensor) -> tuple[Tensor, list[dict]]:
    """Mirror the images where ``flip`` is True, with their boxes."""
    width = images.shape[-1]
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    out = []
    for t, f in zip(targets, flip.tolist(), strict=True):
        boxes = t["boxes"]
        if f:
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        out.append({"boxes": boxes, "labels": t["labels"]})
    return images, out


def train_detector(
    data: ShapesSet, seed: int = 0, epochs: int | None = None, verbose: bool = True
) -> tuple[ShapesDetector, dict[str, Any]]:
    """Train a fresh :class:`ShapesDetector` on ``data``; returns the model (eval mode) and its config."""
    cfg = dict(TRAIN_CONFIG)
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ShapesDetector(num_classes=len(SHAPES_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps_per_epoch = math.ceil(len(data) / cfg["batch_size"])
    total = cfg["epochs"] * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < cfg["warmup"]:
            return (step + 1) / cfg["warmup"]
        return 0.5 * (1 + math.cos(math.pi * (step - cfg["warmup"]) / max(1, total - cfg["warmup"])))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    for epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(data), generator=gen)
        flips = torch.rand(len(data), generator=gen) < 0.5
        running = {"heatmap": 0.0, "box": 0.0}
        for i in range(0, len(perm), cfg["batch_size"]):
            idx = perm[i : i + cfg["batch_size"]]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            images, targets = _flip(data.images[idx], [data.targets[j] for j in idx.tolist()], flips[idx])
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k in running:
                running[k] += float(losses[k].detach()) / steps_per_epoch
        if verbose:
            print(
                f"  epoch {epoch + 1:2d}/{cfg['epochs']}  heatmap {running['heatmap']:.3f}  box {running['box']:.3f}"
            )
    return model.eval(), cfg


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the demo detector, measure its test mAP and write the checkpoint; returns its ``meta``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=DETECTOR_CHECKPOINT)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        train, test = load_shapes_split("train", args.seed), load_shapes_split("test", args.seed)
        t0 = time.perf_counter()
        model, cfg = train_detector(train, seed=args.seed, epochs=args.epochs, verbose=not args.quiet)
        seconds = time.perf_counter() - t0
        scores = evaluate_map(model, test)
        meta = {
            "seed": args.seed,
            "dataset": f"pruneviz.data.shapes (train {len(train)}, test {len(test)} images)",
            "classes": list(SHAPES_CLASSES),
            "image_size": 64,
            "map50": scores["map50"],
            "map": scores["map"],
            "map75": scores["map75"],
            "epochs": cfg["epochs"],
            "train_seconds": round(seconds, 2),
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch_version": str(torch.__version__),
            **{k: v for k, v in cfg.items() if k != "epochs"},
        }
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
        save_checkpoint({"arch": ARCH, "state_dict": state, "meta": meta}, args.out)
        print(
            f"{ARCH}: test mAP@0.5 {scores['map50']:.4f}, mAP@[.5:.95] {scores['map']:.4f}, "
            f"{seconds:.1f}s training -> {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)"
        )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return meta


if __name__ == "__main__":
    main()
