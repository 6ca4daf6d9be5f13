"""scikit-learn's 8x8 handwritten digits as the offline default dataset.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1,797 images, 10 classes), so nothing is
downloaded. The split is fixed and stratified (60/20/20 train/val/test); pixels are scaled to [0, 1]
and then standardised with the *train* split's scalar mean and std.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["DIGITS_CLASSES", "DigitsSplit", "load_digits_split", "digits_tensors"]

#: Class names of the digits dataset, index == label.
DIGITS_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))

_FRACTIONS = (0.6, 0.2, 0.2)
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DigitsSplit:
    """Train/val/test ``TensorDataset`` s of (N, 1, 8, 8) float32 images and int64 labels."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: list[str] = field(default_factory=lambda: list(DIGITS_CLASSES))
    mean: float = 0.0
    std: float = 1.0
    seed: int = 0

    def get(self, split: str) -> TensorDataset:
        """Return the dataset called ``split`` ("train", "val" or "test")."""
        if split not in _SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(_SPLITS)}.")
        return getattr(self, split)


_CACHED_SPLIT = Path(__file__).resolve().parent / "digits_split_seed0.npz"


def _digits_csv() -> Path | None:
    """scikit-learn's own copy of the digits (``datasets/data/digits.csv.gz``), found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            return path
    return None


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    # Reading scikit-learn's data file directly is what load_digits does, without the 1.5 s import of
    # scikit-learn (it matters for the app's cold start).
    path = _digits_csv()
    if path is not None:
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        pixels, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, target = bunch.images, bunch.target
    images = pixels.astype(np.float32) / 16.0  # pixel values are 0..16
    labels = target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits_split(seed: int = 0) -> DigitsSplit:
    """Load the digits dataset as a fixed, stratified 60/20/20 split (same seed -> identical tensors)."""
    images, labels = _raw_digits()
    if seed == 0 and _CACHED_SPLIT.exists():  # sklearn's split for seed 0, stored (the demo models use it)
        cached = np.load(_CACHED_SPLIT)
        train_idx, val_idx, test_idx = (cached[k].astype(np.int64) for k in _SPLITS)
    else:
        train_idx, val_idx, test_idx = _split(labels, seed)

    train_x = images[train_idx]
    mean = float(train_x.mean(dtype=np.float64))
    std = float(train_x.std(dtype=np.float64))

    def make(ix: np.ndarray) -> TensorDataset:
        x = (images[ix].astype(np.float64) - mean) / std
        x_t = torch.from_numpy(x.astype(np.float32)).unsqueeze(1).contiguous()
        y_t = torch.from_numpy(labels[ix].copy())
        return TensorDataset(x_t, y_t)

    return DigitsSplit(
        train=make(train_idx),
        val=make(val_idx),
        test=make(test_idx),
        classes=list(DIGITS_CLASSES),
        mean=mean,
        std=std,
        seed=seed,
    )


def _split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stratified 60/20/20 split of scikit-learn's ``train_test_split`` with ``random_state=seed``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train_idx, rest_idx = train_test_split(
        idx, train_size=_FRACTIONS[0], stratify=labels, random_state=seed, shuffle=True
    )
    val_frac = _FRACTIONS[1] / (_FRACTIONS[1] + _FRACTIONS[2])
    val_idx, test_idx = train_test_split(
        rest_idx, train_size=val_frac, stratify=labels[rest_idx], random_state=seed, shuffle=True
    )
    return train_idx, val_idx, test_idx


def digits_tensors(
    split: Literal["train", "val", "test"] = "test", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)`` of one split: x float32 (N, 1, 8, 8) normalised, y int64 (N,)."""
    x, y = load_digits_split(seed).get(split).tensors
    return x, y
