"""The embedded demos: each a trained model with the offline data it is evaluated on.

One registry for the explorer (``pv.explore("detector")``), the dashboard's model picker and the lessons:
what to load, which data to evaluate it on, a few calibration batches for the gradient criteria, the class
names and a title. Everything is read lazily, so listing the demos costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Demo:
    """One demo: ``load()`` -> the model (eval mode); ``data()`` -> (evaluation data, calibration batches)."""

    name: str
    label: str
    title: str
    model_class: str  # the class name of its model (how a demo model passed without data is recognised)
    load: Callable[[], nn.Module]
    data: Callable[[], tuple[Any, list]]
    classes: Callable[[], list[str]]
    task: str = "auto"


def _digits_model(name: str) -> Callable[[], nn.Module]:
    def load() -> nn.Module:
        from .models import load_demo_model

        return load_demo_model(name)
    return load


def _digits_data() -> tuple[Any, list]:
    from .digits import digits_tensors, load_digits_split

    x, y = load_digits_split().train.tensors
    return digits_tensors("test"), [(x[i: i + 64], y[i: i + 64]) for i in range(0, 256, 64)]


def _digits_classes() -> list[str]:
    from .digits import DIGITS_CLASSES

    return list(DIGITS_CLASSES)


def _detector() -> nn.Module:
    from .detector import load_shapes_detector

    return load_shapes_detector()


def _shapes_data() -> tuple[Any, list]:
    from .shapes import load_shapes_split, make_shapes

    test = load_shapes_split("test")
    extra = make_shapes(128, seed=1)  # the training split's generator and seed: like training images, made fast
    calib = [(extra.images[i: i + 32], extra.targets[i: i + 32]) for i in range(0, 128, 32)]
    return (test.images, test.targets), calib


def _shapes_classes() -> list[str]:
    from .shapes import SHAPES_CLASSES

    return list(SHAPES_CLASSES)


DEMOS: dict[str, Demo] = {
    "cnn": Demo("cnn", "Small CNN (with BatchNorm)", "pruneviz · demo CNN on 8×8 handwritten digits", "DigitsCNN",
                _digits_model("cnn"), _digits_data, _digits_classes),
    "mlp": Demo("mlp", "MLP (LeNet-300-100 style)", "pruneviz · demo MLP on 8×8 handwritten digits", "DigitsMLP",
                _digits_model("mlp"), _digits_data, _digits_classes),
    "detector": Demo("detector", "Object detector (CenterNet-style)",
                     "pruneviz · demo detector on generated shapes (300 test images)", "ShapesDetector",
                     _detector, _shapes_data, _shapes_classes, task="detection"),
}


def demo_for(model: nn.Module) -> Demo | None:
    """The demo whose model ``model`` is (by class), or None."""
    name = type(model).__name__
    return next((d for d in DEMOS.values() if d.model_class == name and type(model).__module__.startswith(
        "pruneviz.data")), None)


def demo_defaults(model: nn.Module) -> tuple[Any, list, list[str], str] | None:
    """A demo model's (evaluation data, calibration batches, class names, title), or None for other models."""
    demo = demo_for(model)
    if demo is None:
        return None
    data, calib = demo.data()
    return data, calib, demo.classes(), demo.title
