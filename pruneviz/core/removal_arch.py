"""Which constructor rebuilds a model: the architecture :func:`pruneviz.core.slim_export.save_slim` names.

A slim model file holds plain data only (it loads with ``torch.load(weights_only=True)``), so it must say how to
build the *unpruned* architecture before the removal is replayed on it: an importable constructor
(``"torchvision.models:resnet18"``, ``"pruneviz.data.models:DigitsCNN"``) and plain keyword arguments.
:func:`find_architecture` derives them for torchvision models, the demo models and any ``nn.Module`` class
whose arguments it can recover (defaults, attributes of the same name, a demo checkpoint's config), and proves
each guess by building it on the ``meta`` device (no memory, no weights) and comparing every parameter and
buffer name and shape. When no guess fits it says why, in words.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """``spec`` ("package.module:Constructor") and ``kwargs`` rebuild the model; ``spec`` is None when no
    constructor was found, and ``reason`` says why."""

    spec: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def found(self) -> bool:
        return self.spec is not None


def _signature(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def _builds(ctor: Any, kwargs: dict[str, Any], want: dict[str, tuple[int, ...]], cls: type) -> bool:
    try:
        with torch.device("meta"):
            built = ctor(**kwargs)
    except Exception:  # noqa: BLE001 - a guess that does not build is simply wrong
        return False
    return type(built) is cls and _signature(built) == want


def _out_features(model: nn.Module) -> int | None:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m.out_features
    return last


def _torchvision(model: nn.Module, want: dict) -> Architecture | None:
    if not type(model).__module__.startswith("torchvision.models"):
        return None
    import torchvision.models as models

    n = _out_features(model)
    for name in models.list_models():
        builder = models.get_model_builder(name)
        if builder.__module__ != type(model).__module__:  # resnet18 lives beside ResNet: a cheap first filter
            continue
        base: dict[str, Any] = {"weights": None}  # never a download
        if "weights_backbone" in inspect.signature(builder).parameters:
            base["weights_backbone"] = None
        for kwargs in [base] + ([{**base, "num_classes": n}] if n else []):
            if _builds(builder, kwargs, want, type(model)):
                extra = {k: v for k, v in kwargs.items() if k != "weights"}  # weights_backbone=None stays
                where = "torchvision.models" if getattr(models, name, None) is builder else builder.__module__
                return Architecture(f"{where}:{name}", extra)
    return Architecture(None, reason=f"no torchvision builder makes this {type(model).__name__} (with weights=None "
                                     "and at most num_classes changed)")


def _demo_configs(cls: type) -> Iterator[dict[str, Any]]:
    """Constructor configs of the demo checkpoints whose class is ``cls``."""
    if not cls.__module__.startswith("pruneviz.data"):
        return
    try:
        from ..data.modality_models import MODALITY_MODELS, modality_checkpoint_meta

        for name, (mcls, _) in MODALITY_MODELS.items():
            if mcls is cls:
                config = modality_checkpoint_meta(name).get("config")
                if isinstance(config, dict):
                    yield dict(config)
    except Exception:  # noqa: BLE001 - a missing checkpoint only removes a guess
        return


def _guesses(model: nn.Module) -> Iterator[dict[str, Any]]:
    cls = type(model)
    yield from _demo_configs(cls)
    try:
        params = [p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        return
    from_attrs = {p.name: getattr(model, p.name) for p in params if _plain(getattr(model, p.name, object()))}
    from_attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in from_attrs.items()}
    if from_attrs:
        yield from_attrs
    yield {}
    n = _out_features(model)
    if n is not None and any(p.name == "num_classes" for p in params):
        yield {"num_classes": n}


def find_architecture(model: nn.Module) -> Architecture:
    """The constructor and keyword arguments that rebuild ``model``'s architecture (see the module notes)."""
    cls = type(model)
    want = _signature(model)
    tv = _torchvision(model, want)
    if tv is not None:
        return tv
    where = cls.__module__
    if where in ("__main__", "builtins") or "<locals>" in cls.__qualname__:
        return Architecture(None, reason=(f"{cls.__name__} is defined in the notebook or script itself "
                                          f"({where}), so a fresh Python process cannot import it"))
    for kwargs in _guesses(model):
        if _builds(cls, kwargs, want, cls):
            return Architecture(f"{where}:{cls.__qualname__}", kwargs)
    return Architecture(None, reason=(f"{cls.__name__}'s constructor needs arguments pruneviz cannot recover from the "
                                      "model (none of its guesses rebuilds the same parameter shapes)"))
