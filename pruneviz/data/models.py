"""Demo models for the 10-class 1x8x8 digits dataset, with committed pretrained checkpoints.

The checkpoints in ``pruneviz/data/checkpoints/`` are written by ``python -m pruneviz.data.train_demo``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError, PrunevizError, suggest

__all__ = [
    "CHECKPOINT_DIR",
    "DEMO_MODELS",
    "DemoCheckpointError",
    "DigitsCNN",
    "DigitsMLP",
    "build_demo_model",
    "checkpoint_path",
    "demo_checkpoint_meta",
    "load_demo_model",
]

#: Directory holding the committed demo checkpoints (package data).
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

TRAIN_COMMAND = "python -m pruneviz.data.train_demo"


class DemoCheckpointError(CheckpointError, RuntimeError):
    """A demo checkpoint that is missing, corrupt or made for another architecture."""


class DigitsCNN(nn.Module):
    """Small CNN for 1x8x8 digits; BatchNorm after every conv (network-slimming BN scales apply)."""

    input_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 2 * 2, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DigitsMLP(nn.Module):
    """LeNet-300-100-style MLP for flattened 1x8x8 digits: 64 -> 300 -> 100 -> 10."""

    input_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


#: Demo model name -> one-line description.
DEMO_MODELS: dict[str, str] = {
    "cnn": "DigitsCNN: 3 conv+BatchNorm+ReLU layers, 2 max-pools, MLP head (8x8 sklearn digits, 10 classes)",
    "mlp": "DigitsMLP: LeNet-300-100-style MLP, 64-300-100-10 (8x8 sklearn digits, 10 classes)",
}

_ALIASES = {"cnn": "cnn", "digits_cnn": "cnn", "mlp": "mlp", "digits_mlp": "mlp"}
_CLASSES: dict[str, type[nn.Module]] = {"cnn": DigitsCNN, "mlp": DigitsMLP}
_ARCH = {"cnn": "DigitsCNN", "mlp": "DigitsMLP"}


class UnknownDemoError(PrunevizError):
    """A demo model name pruneviz does not ship."""


def _demo_names() -> list[str]:
    from .demos import DEMOS

    return list(DEMOS)


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        valid = ", ".join(repr(n) for n in _demo_names())
        raise UnknownDemoError(f"Unknown demo model {name!r}; valid names are: {valid}." + suggest(key, _demo_names()))
    return _ALIASES[key]


def checkpoint_path(name: str) -> Path:
    """Path of the committed checkpoint for demo model ``name``."""
    return CHECKPOINT_DIR / f"digits_{_canonical(name)}.pt"


def build_demo_model(name: str = "cnn") -> nn.Module:
    """Build demo model ``name`` with fresh (untrained) weights, in train mode."""
    return _CLASSES[_canonical(name)]()


def _read_checkpoint(path: Path, canonical: str) -> dict[str, Any]:
    hint = f"Rebuild the demo checkpoints with `{TRAIN_COMMAND}`."
    if not path.is_file():
        raise DemoCheckpointError(f"Demo checkpoint {str(path)!r} not found. {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling / zip error means the file is unusable
        raise DemoCheckpointError(
            f"Demo checkpoint {str(path)!r} is corrupt or unreadable ({type(exc).__name__}). {hint}"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DemoCheckpointError(f"Demo checkpoint {str(path)!r} has no 'state_dict'. {hint}")
    arch = ckpt.get("arch")
    if arch != _ARCH[canonical]:
        raise DemoCheckpointError(
            f"Demo checkpoint {str(path)!r} holds arch {arch!r}, expected {_ARCH[canonical]!r}. {hint}"
        )
    return ckpt


def load_demo_model(
    name: str = "cnn",
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Return demo model ``name`` in eval mode: "cnn"/"mlp" (or "digits_cnn"/"digits_mlp"), or any other demo
    of :data:`pruneviz.data.demos.DEMOS` (e.g. "detector"; always pretrained).

    With ``pretrained=True`` the weights come from the committed checkpoint, or from ``checkpoint``
    if given; a missing or corrupt file raises :class:`DemoCheckpointError`.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        from .demos import DEMOS

        if key in DEMOS and pretrained and checkpoint is None:
            return DEMOS[key].load()
    canonical = _canonical(name)
    model = _CLASSES[canonical]()
    if pretrained:
        path = Path(checkpoint) if checkpoint is not None else checkpoint_path(canonical)
        ckpt = _read_checkpoint(path, canonical)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise DemoCheckpointError(
                f"Demo checkpoint {str(path)!r} does not fit {_ARCH[canonical]}: {exc}. "
                f"Rebuild the demo checkpoints with `{TRAIN_COMMAND}`."
            ) from exc
    return model.eval()


def demo_checkpoint_meta(
    name: str = "cnn", checkpoint: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Return the ``meta`` dict (seed, accuracies, ...) stored in a demo checkpoint."""
    canonical = _canonical(name)
    path = Path(checkpoint) if checkpoint is not None else checkpoint_path(canonical)
    return dict(_read_checkpoint(path, canonical).get("meta", {}))
