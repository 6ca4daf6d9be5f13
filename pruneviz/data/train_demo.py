"""Train the demo models deterministically on CPU and write their checkpoints.

Usage: ``python -m pruneviz.data.train_demo [--seed 0] [--out-dir DIR] [--models cnn mlp]``

Both models train on the digits train split (Adam, cosine learning rate, random +-1 pixel shifts),
the epoch with the best validation accuracy is kept, and its test accuracy is stored in the
checkpoint's ``meta``. Runs single-threaded with deterministic algorithms, so a given machine
reproduces the same weights; it takes well under a minute.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .digits import DigitsSplit, load_digits_split
from .models import _ARCH, CHECKPOINT_DIR, build_demo_model

__all__ = ["TRAIN_CONFIG", "evaluate_accuracy", "train_model", "save_checkpoint", "main"]

#: Per-model training hyper-parameters.
TRAIN_CONFIG: dict[str, dict[str, Any]] = {
    "cnn": {"epochs": 60, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4},
    "mlp": {"epochs": 120, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4},
}


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``(x, y)``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def _random_shift(x: torch.Tensor, background: float, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by a random offset in {-1, 0, 1}^2, filling with the background value."""
    n, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1), value=background)
    offsets = torch.randint(0, 3, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for dy in range(3):
        for dx in range(3):
            sel = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            if sel.any():
                out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
    return out


def train_model(name: str, data: DigitsSplit, seed: int = 0, verbose: bool = True) -> tuple[nn.Module, dict]:
    """Train demo model ``name`` on ``data.train``; keep the best epoch on ``data.val``."""
    cfg = TRAIN_CONFIG[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_demo_model(name)
    x_tr, y_tr = data.train.tensors
    x_val, y_val = data.val.tensors
    background = (0.0 - data.mean) / data.std  # value of a blank pixel after normalisation

    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"])
    best = (-1.0, float("inf"))
    best_state: dict[str, torch.Tensor] = {}
    best_epoch = -1
    for epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(perm), cfg["batch_size"]):
            idx = perm[i : i + cfg["batch_size"]]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            xb = _random_shift(x_tr[idx], background, gen)
            loss = F.cross_entropy(model(xb), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()

        model.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(model(x_val), y_val))
        val_acc = evaluate_accuracy(model, x_val, y_val)
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best = (val_acc, val_loss)
            best_state = copy.deepcopy(model.state_dict())
            best_epoch = epoch
        if verbose and (epoch + 1) % 10 == 0:
            print(f"  [{name}] epoch {epoch + 1:3d}  val_acc {val_acc:.4f}  val_loss {val_loss:.4f}")

    model.load_state_dict(best_state)
    model.eval()
    info = {"best_epoch": best_epoch + 1, "val_accuracy": best[0], "val_loss": best[1], **cfg}
    return model, info


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Save ``obj`` with ``torch.save`` atomically (temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; package data must be world-readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Train the requested demo models, write their checkpoints and print test accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--models", nargs="+", choices=sorted(TRAIN_CONFIG), default=["cnn", "mlp"])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        data = load_digits_split(args.seed)
        x_te, y_te = data.test.tensors
        t_all = time.perf_counter()
        for name in args.models:
            t0 = time.perf_counter()
            model, info = train_model(name, data, seed=args.seed, verbose=not args.quiet)
            test_acc = evaluate_accuracy(model, x_te, y_te)
            seconds = time.perf_counter() - t0
            meta = {
                "seed": args.seed,
                "dataset": "sklearn.datasets.load_digits (60/20/20 stratified split)",
                "mean": data.mean,
                "std": data.std,
                "classes": list(data.classes),
                "test_accuracy": test_acc,
                "train_seconds": round(seconds, 2),
                "torch_version": str(torch.__version__),
                **info,
            }
            state = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
            path = Path(args.out_dir) / f"digits_{name}.pt"
            save_checkpoint({"state_dict": state, "arch": _ARCH[name], "meta": meta}, path)
            results[name] = meta
            print(
                f"{_ARCH[name]}: test accuracy {test_acc:.4f} (val {info['val_accuracy']:.4f}, "
                f"best epoch {info['best_epoch']}), {seconds:.1f}s -> {path} ({path.stat().st_size / 1024:.0f} KiB)"
            )
        print(f"total training time {time.perf_counter() - t_all:.1f}s")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return results


if __name__ == "__main__":
    main()
