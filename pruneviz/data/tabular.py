"""scikit-learn's bundled tables (breast cancer, wine) as offline tabular-classification datasets.

``load_breast_cancer`` (569 tumours, 30 features, malignant/benign) and ``load_wine`` (178 wines, 13
features, 3 cultivars) ship inside scikit-learn, so nothing is downloaded. The split is fixed and
stratified (60/20/20 train/val/test, scikit-learn's ``train_test_split`` with ``random_state=seed``).
Features stay raw (float32): :class:`~pruneviz.data.modality_models.TabularMLP` standardises them itself
with the train split's ``mean`` / ``std`` given here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .modality_models import check_features
from .text import DatasetError

__all__ = ["TABULAR_DATASETS", "TabularSplit", "check_features", "load_tabular_split"]

#: Dataset name -> one-line description.
TABULAR_DATASETS: dict[str, str] = {
    "breast_cancer": "scikit-learn breast cancer (Wisconsin): 569 tumours, 30 features, malignant / benign",
    "wine": "scikit-learn wine: 178 wines, 13 chemical features, 3 cultivars",
}
_FRACTIONS = (0.6, 0.2, 0.2)
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TabularSplit:
    """Train/val/test ``TensorDataset`` s of raw float32 features (N, F) and int64 labels."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    feature_names: list[str]
    classes: list[str]
    mean: torch.Tensor  # float32 (F,), train split
    std: torch.Tensor  # float32 (F,), train split (zeros replaced by 1)
    name: str
    seed: int = 0

    def get(self, split: str) -> TensorDataset:
        """Return the dataset called ``split`` ("train", "val" or "test")."""
        if split not in _SPLITS:
            raise DatasetError(f"Unknown split {split!r}; expected one of {', '.join(_SPLITS)}.")
        return getattr(self, split)


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in TABULAR_DATASETS:
        raise DatasetError(f"Unknown tabular dataset {name!r}; choose one of {', '.join(TABULAR_DATASETS)}.")
    return key


@lru_cache(maxsize=4)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    from sklearn import datasets

    bunch = datasets.load_breast_cancer() if name == "breast_cancer" else datasets.load_wine()
    classes = [str(c) for c in bunch.target_names]
    names = [str(f) for f in bunch.feature_names]
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), names, classes


@lru_cache(maxsize=8)
def _load(name: str, seed: int) -> TabularSplit:
    from sklearn.model_selection import train_test_split

    x, y, feature_names, classes = _raw(name)
    idx = np.arange(len(y))
    train_idx, rest = train_test_split(idx, train_size=_FRACTIONS[0], stratify=y, random_state=seed)
    val_frac = _FRACTIONS[1] / (_FRACTIONS[1] + _FRACTIONS[2])
    val_idx, test_idx = train_test_split(rest, train_size=val_frac, stratify=y[rest], random_state=seed)
    train_x = x[np.sort(train_idx)].astype(np.float64)
    std = train_x.std(0)
    std[std == 0] = 1.0

    def make(ix: np.ndarray) -> TensorDataset:
        ix = np.sort(ix)
        return TensorDataset(torch.from_numpy(x[ix].copy()), torch.from_numpy(y[ix].copy()))

    return TabularSplit(
        train=make(train_idx), val=make(val_idx), test=make(test_idx),
        feature_names=feature_names, classes=classes,
        mean=torch.from_numpy(train_x.mean(0).astype(np.float32)),
        std=torch.from_numpy(std.astype(np.float32)),
        name=name, seed=seed,
    )


def load_tabular_split(name: str = "breast_cancer", seed: int = 0) -> TabularSplit:
    """Load ``name`` ("breast_cancer" or "wine") as a fixed stratified 60/20/20 split (cached)."""
    return _load(_canonical(name), int(seed))
