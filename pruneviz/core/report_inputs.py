"""What a report runs on: a named demo, or a user's saved model and data in a safe, documented format.

Model file (``--checkpoint``): a ``torch.save``-d dict, read with ``torch.load(weights_only=True)`` (plain
tensors and Python literals only, never arbitrary pickled objects)::

    {"format": "pruneviz-model/1",
     "constructor": "my_package.models:MyNet",   # an importable nn.Module class (or a function returning one)
     "kwargs": {"width": 64},                      # JSON-like constructor arguments (optional)
     "state_dict": model.state_dict()}

:func:`save_model` writes it. Data file (``--data``): ``{"inputs": tensor, "targets": tensor}`` with optional
``"calib_inputs"``/``"calib_targets"`` (calibration batches for saliency, Taylor and Wanda), also read with
``weights_only=True``; :func:`save_data` writes it. The constructor is imported by name (the user's own command
line names the file; nothing here is reachable from a web visitor).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, PrunevizError, suggest
from .files import atomic_write, load_checkpoint

MODEL_FORMAT = "pruneviz-model/1"


class ReportError(PrunevizError):
    """Bad input to a report (names, folders, files, the Dask address)."""


@dataclass
class ReportInput:
    """The model, its evaluation data, calibration batches (or None), task and display names."""

    model: nn.Module
    data: Any
    calib: list | None
    task: str
    name: str
    title: str


def demo_input(name: str) -> ReportInput:
    """A demo from :data:`pruneviz.data.demos.DEMOS` (close names are suggested)."""
    from ..data.demos import DEMOS

    if not isinstance(name, str) or name not in DEMOS:
        raise ReportError(f"unknown demo model {name!r}; choose one of {', '.join(DEMOS)}." + suggest(str(name), DEMOS)
                          + " For your own model pass --checkpoint PATH --data PATH.")
    demo = DEMOS[name]
    data, calib = demo.data()
    return ReportInput(demo.load(), data, calib, demo.task, name, demo.title)


def _literal(obj: Any, where: str) -> Any:
    """``obj`` if it is a JSON-like literal (numbers, strings, bools, None, lists and string-keyed dicts)."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, list | tuple):
        return [_literal(v, where) for v in obj]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {k: _literal(v, where) for k, v in obj.items()}
    raise CheckpointError(f"{where} must hold plain values (numbers, strings, lists, dicts), not {type(obj).__name__}.")


def _constructor(spec: Any, path: Path) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        raise CheckpointError(f"{path}: 'constructor' must be 'package.module:ClassName', got {spec!r}.")
    module_name, _, attr = spec.partition(":")
    if module_name == "__main__" or not module_name or not attr:
        raise CheckpointError(f"{path}: constructor {spec!r} is not importable: define the model class in a module "
                              "(a file on the Python path), not in a script or notebook.")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"{path}: cannot import the model constructor {spec!r} ({type(e).__name__}: {e}); "
                              "install or put its module on PYTHONPATH.") from None
    if not callable(obj):
        raise CheckpointError(f"{path}: constructor {spec!r} is not a class or function.")
    return obj


def load_model_file(path: str | os.PathLike) -> nn.Module:
    """The model saved by :func:`save_model` (format in the module docstring), in eval mode."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not a pruneviz model file (format {MODEL_FORMAT!r}): save your model with "
                              "pruneviz.core.report_inputs.save_model(model, path).")
    ctor = _constructor(ckpt.get("constructor"), path)
    kwargs = _literal(ckpt.get("kwargs") or {}, f"{path}: 'kwargs'")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: 'kwargs' must be a dict of constructor arguments.")
    try:
        model = ctor(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's constructor
        raise CheckpointError(f"{path}: {ckpt['constructor']}(**kwargs) raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{path}: {ckpt['constructor']} gave a {type(model).__name__}, not an nn.Module.")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is missing.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit {ckpt['constructor']}: {str(e)[:300]}") from None
    return model.eval()


def save_model(model: nn.Module, path: str | os.PathLike, constructor: str | None = None,
               kwargs: dict[str, Any] | None = None) -> Path:
    """Write ``model`` for ``pruneviz report --checkpoint``: its state dict and how to build it
    (``constructor`` default: its class as ``module:QualName``; ``kwargs``: the constructor's arguments)."""
    cls = type(model)
    constructor = constructor or f"{cls.__module__}:{cls.__qualname__}"
    if constructor.startswith("__main__:") or "<locals>" in constructor:
        raise CheckpointError(f"{cls.__qualname__} is defined in a script, notebook or function: move it into a "
                              "module so the report can import it, or pass constructor='module:Class'.")
    blob = {"format": MODEL_FORMAT, "constructor": constructor, "kwargs": _literal(kwargs or {}, "kwargs"),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return atomic_write(path, lambda f: torch.save(blob, f))


def save_data(path: str | os.PathLike, inputs: torch.Tensor, targets: torch.Tensor,
              calib_inputs: torch.Tensor | None = None, calib_targets: torch.Tensor | None = None) -> Path:
    """Write evaluation (and calibration) tensors for ``pruneviz report --data``."""
    blob = {"inputs": inputs, "targets": targets}
    if calib_inputs is not None:
        blob.update(calib_inputs=calib_inputs, calib_targets=calib_targets)
    return atomic_write(path, lambda f: torch.save(blob, f))


def load_data_file(path: str | os.PathLike) -> tuple[tuple[torch.Tensor, torch.Tensor], list | None]:
    """((inputs, targets), calibration batches or None) from a file written by :func:`save_data`."""
    path = Path(path)
    blob = load_checkpoint(path)
    if isinstance(blob, list | tuple) and len(blob) == 2:
        blob = {"inputs": blob[0], "targets": blob[1]}
    if not isinstance(blob, dict) or not all(isinstance(blob.get(k), torch.Tensor) for k in ("inputs", "targets")):
        raise CheckpointError(f"{path} must hold {{'inputs': tensor, 'targets': tensor}} (optionally calib_inputs and "
                              "calib_targets): write it with pruneviz.core.report_inputs.save_data(...).")
    calib = None
    ci, ct = blob.get("calib_inputs"), blob.get("calib_targets")
    if ci is not None or ct is not None:
        if not (isinstance(ci, torch.Tensor) and isinstance(ct, torch.Tensor) and len(ci) == len(ct) and len(ci)):
            raise CheckpointError(f"{path}: calib_inputs and calib_targets must be tensors of the same length.")
        calib = [(ci[i: i + 64], ct[i: i + 64]) for i in range(0, min(len(ci), 512), 64)]
    return (blob["inputs"], blob["targets"]), calib


def file_input(checkpoint: str | os.PathLike, data: str | os.PathLike, task: str = "auto") -> ReportInput:
    """A user's model and data files (see the module docstring)."""
    model = load_model_file(checkpoint)
    (x, y), calib = load_data_file(data)
    name = Path(checkpoint).stem
    return ReportInput(model, (x, y), calib, task, name, f"{type(model).__name__} ({name})")
