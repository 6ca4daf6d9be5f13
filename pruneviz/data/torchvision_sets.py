"""Loaders for real torchvision datasets (MNIST, Fashion-MNIST, CIFAR-10) from a local copy.

Nothing is downloaded unless ``download=True`` is passed explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["TORCHVISION_DATASETS", "load_torchvision_dataset"]

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)

#: Dataset name -> torchvision class name, folder (relative to root), expected files, normalisation stats.
TORCHVISION_DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "class": "MNIST",
        "folder": "MNIST/raw",
        "files": _MNIST_FILES,
        "mean": (0.1307,),
        "std": (0.3081,),
    },
    "fashion-mnist": {
        "class": "FashionMNIST",
        "folder": "FashionMNIST/raw",
        "files": _MNIST_FILES,
        "mean": (0.2860,),
        "std": (0.3530,),
    },
    "cifar10": {
        "class": "CIFAR10",
        "folder": "cifar-10-batches-py",
        "files": _CIFAR10_FILES,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
}

_ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}


def _canonical(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _ALIASES:
        valid = ", ".join(repr(n) for n in TORCHVISION_DATASETS)
        raise ValueError(f"Unknown torchvision dataset {name!r}; valid names are: {valid}.")
    return _ALIASES[key]


def load_torchvision_dataset(
    name: str, root: str | os.PathLike[str], train: bool = True, download: bool = False
) -> Any:
    """Return torchvision dataset ``name`` ("mnist", "fashion-mnist", "cifar10") read from ``root``.

    Images are transformed with ``ToTensor()`` and ``Normalize`` (the dataset's usual mean/std).
    Without ``download=True`` nothing is fetched: missing files raise ``FileNotFoundError`` naming
    the folder and files expected under ``root``.
    """
    import torchvision
    from torchvision import transforms

    key = _canonical(name)
    spec = TORCHVISION_DATASETS[key]
    root = Path(root).expanduser()
    folder = root / spec["folder"]
    if not download:
        missing = [f for f in spec["files"] if not (folder / f).is_file()]
        if missing:
            hint = ""
            if spec["class"] != "CIFAR10":
                hint = " (the uncompressed idx files, not the .gz archives)"
            raise FileNotFoundError(
                f"{spec['class']} files missing in {str(folder)!r}: {', '.join(missing)}. "
                f"Put the dataset files{hint} there, or pass download=True to download them."
            )

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])])
    cls = getattr(torchvision.datasets, spec["class"])
    try:
        return cls(root=str(root), train=train, transform=transform, download=download)
    except RuntimeError as exc:
        raise RuntimeError(
            f"Could not load {spec['class']} from {str(folder)!r}: {exc}. The files may be incomplete or "
            "corrupted (torchvision checks their md5); replace them or pass download=True."
        ) from exc
