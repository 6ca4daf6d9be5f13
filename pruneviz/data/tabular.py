"""scikit-learn's bundled tables (breast cancer, wine) as offline tabular-classification datasets.

``load_breast_cancer`` (569 tumours, 30 features, malignant/benign) and ``load_wine`` (178 wines, 13
features, 3 cultivars) ship inside scikit-learn, so nothing is downloaded. Their CSV files are read from
scikit-learn's folder without importing it (importing scikit-learn costs ~1.5 s, paid by an app visitor who
picks the tabular model). The split is fixed and stratified (60/20/20 train/val/test, a seeded permutation
per class).
Features stay raw (float32): :class:`~pruneviz.data.modality_models.TabularMLP` standardises them itself
with the train split's ``mean`` / ``std`` given here.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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


#: scikit-learn's file and feature names (its loaders hard-code the names too)
_FILES = {"breast_cancer": "breast_cancer.csv", "wine": "wine_data.csv"}
_FEATURES = {
    "breast_cancer": [f"{kind}{name}" for kind in ("mean ", "", "worst ") for name in (
        "radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity", "concave points",
        "symmetry", "fractal dimension")],
    "wine": ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols", "flavanoids",
             "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue", "od280/od315_of_diluted_wines",
             "proline"],
}
_FEATURES["breast_cancer"][10:20] = [f"{n} error" for n in _FEATURES["breast_cancer"][10:20]]


def _csv_path(name: str) -> Path:
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / _FILES[name]
        if path.exists():
            return path
    raise DatasetError(f"scikit-learn's {_FILES[name]} was not found: install scikit-learn (pip install scikit-learn).")


@lru_cache(maxsize=4)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    with open(_csv_path(name), encoding="utf-8") as f:
        rows = list(csv.reader(f))
    n, n_features, *classes = rows[0]
    table = np.array(rows[1:], dtype=np.float64)
    if table.shape != (int(n), int(n_features) + 1):
        raise DatasetError(f"scikit-learn's {_FILES[name]} has an unexpected shape {table.shape}.")
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64), list(_FEATURES[name]), classes


def _stratified_split(y: np.ndarray, seed: int) -> list[np.ndarray]:
    """Train/val/test indices with each class split 60/20/20 (rounded), from a seeded permutation per class."""
    g = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(y):
        members = g.permutation(np.flatnonzero(y == c))
        n_train = round(_FRACTIONS[0] * len(members))
        n_val = round(_FRACTIONS[1] * len(members))
        for k, chunk in enumerate((members[:n_train], members[n_train:n_train + n_val], members[n_train + n_val:])):
            parts[k].extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


@lru_cache(maxsize=8)
def _load(name: str, seed: int) -> TabularSplit:
    x, y, feature_names, classes = _raw(name)
    train_idx, val_idx, test_idx = _stratified_split(y, seed)
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
