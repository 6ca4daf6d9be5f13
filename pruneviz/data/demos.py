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
    #: more explorer options: how samples are shown (``show``, ``sample_text``, ``feature_names``), embeddings
    options: Callable[[], dict[str, Any]] = lambda: {}
    #: whether a model of ``model_class`` is this demo's (several demos may share a class)
    accepts: Callable[[nn.Module], bool] = lambda model: True


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


def _modality(name: str) -> Callable[[], nn.Module]:
    def load() -> nn.Module:
        from .modality_models import load_modality_model

        return load_modality_model(name)
    return load


def _text_sets():
    """The test snippets and a few train ones, encoded with the demo checkpoints' own vocabulary."""
    from .modality_models import modality_checkpoint_meta
    from .text import load_text_test

    return load_text_test(tuple(modality_checkpoint_meta("text_gru")["vocab"]))


def _text_data() -> tuple[Any, list]:
    test, train = _text_sets()
    x, y = train.tensors
    return test.tensors, [(x[i: i + 64], y[i: i + 64]) for i in range(0, 256, 64)]


def _text_options() -> dict[str, Any]:
    # the live loop evaluates a fixed stratified 1,000 of the 2,561 test snippets: a GRU reads all 48 steps of
    # every snippet, and 1,000 keep a slider move under 300 ms on a laptop CPU
    return {"embeddings": True, "show": "text", "sample_text": _text_sets()[0].texts, "subset_size": 1000}


def _audio_data() -> tuple[Any, list]:
    from .audio import load_audio_split

    val = load_audio_split("val")  # calibration on held-out voices, never on the test clips
    return load_audio_split("test").tensors, [(val.features[i: i + 64], val.labels[i: i + 64])
                                              for i in range(0, 256, 64)]


def _tabular_data() -> tuple[Any, list]:
    from .tabular import load_tabular_split

    split = load_tabular_split("breast_cancer")
    x, y = split.train.tensors
    return split.test.tensors, [(x[i: i + 64], y[i: i + 64]) for i in range(0, len(x), 64)][:4]


def _classes(module: str, attr: str) -> Callable[[], list[str]]:
    def classes() -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(f"pruneviz.data.{module}"), attr))
    return classes


def _tabular_classes() -> list[str]:
    from .tabular import load_tabular_split

    return list(load_tabular_split("breast_cancer").classes)


def _tabular_options() -> dict[str, Any]:
    from .tabular import load_tabular_split

    return {"show": "table", "feature_names": load_tabular_split("breast_cancer").feature_names}


DEMOS: dict[str, Demo] = {
    "cnn": Demo("cnn", "Small CNN (with BatchNorm)", "pruneviz · demo CNN on 8×8 handwritten digits", "DigitsCNN",
                _digits_model("cnn"), _digits_data, _digits_classes),
    "mlp": Demo("mlp", "MLP (LeNet-300-100 style)", "pruneviz · demo MLP on 8×8 handwritten digits", "DigitsMLP",
                _digits_model("mlp"), _digits_data, _digits_classes),
    "detector": Demo("detector", "Object detector (CenterNet-style)",
                     "pruneviz · demo detector on generated shapes (300 test images)", "ShapesDetector",
                     _detector, _shapes_data, _shapes_classes, task="detection"),
    "text_gru": Demo("text_gru", "Text GRU (movie reviews)",
                     "pruneviz · GRU on Rotten Tomatoes review snippets (fresh or rotten)", "TextGRU",
                     _modality("text_gru"), _text_data, _classes("text", "TEXT_CLASSES"), options=_text_options),
    "text_transformer": Demo("text_transformer", "Text Transformer (movie reviews)",
                             "pruneviz · Transformer encoder on Rotten Tomatoes review snippets",
                             "TextTransformer", _modality("text_transformer"), _text_data,
                             _classes("text", "TEXT_CLASSES"), options=_text_options),
    "audio_cnn": Demo("audio_cnn", "Audio CNN (spoken digits)",
                      "pruneviz · Conv1d on log-mel spectrograms of 720 spoken digits (voices it never heard)",
                      "AudioCNN", _modality("audio_cnn"), _audio_data, _classes("audio", "AUDIO_CLASSES"),
                      options=lambda: {"show": "spectrogram"}),
    "tabular_mlp": Demo("tabular_mlp", "Tabular MLP (breast cancer)",
                        "pruneviz · MLP on scikit-learn's breast cancer table (115 test tumours, 30 features)",
                        "TabularMLP", _modality("tabular_mlp"), _tabular_data, _tabular_classes,
                        options=_tabular_options, accepts=lambda m: getattr(m, "n_features", None) == 30),
}


def demo_for(model: nn.Module) -> Demo | None:
    """The demo whose model ``model`` is (by class), or None."""
    name = type(model).__name__
    return next((d for d in DEMOS.values() if d.model_class == name and type(model).__module__.startswith(
        "pruneviz.data") and d.accepts(model)), None)


def demo_defaults(model: nn.Module) -> tuple[Any, list, list[str], str, dict[str, Any]] | None:
    """A demo model's (evaluation data, calibration batches, class names, title, explorer options), or None
    for other models."""
    demo = demo_for(model)
    if demo is None:
        return None
    data, calib = demo.data()
    return data, calib, demo.classes(), demo.title, demo.options()
