"""Offline data and demo models: sklearn digits, pretrained demo CNN/MLP, torchvision dataset loaders."""

from .digits import DIGITS_CLASSES, DigitsSplit, digits_tensors, load_digits_split
from .models import (
    DEMO_MODELS,
    DemoCheckpointError,
    DigitsCNN,
    DigitsMLP,
    build_demo_model,
    demo_checkpoint_meta,
    load_demo_model,
)
from .torchvision_sets import TORCHVISION_DATASETS, load_torchvision_dataset

__all__ = [
    "DEMO_MODELS",
    "DIGITS_CLASSES",
    "TORCHVISION_DATASETS",
    "DemoCheckpointError",
    "DigitsCNN",
    "DigitsMLP",
    "DigitsSplit",
    "build_demo_model",
    "demo_checkpoint_meta",
    "digits_tensors",
    "load_demo_model",
    "load_digits_split",
    "load_torchvision_dataset",
]
