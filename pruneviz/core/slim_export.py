"""Save, reload and export the physically smaller model.

``save_slim`` writes one file of plain data that a fresh Python process reads with
``torch.load(path, weights_only=True)``: a format tag and version, the architecture as an importable
constructor (``"torchvision.models:resnet18"`` + plain kwargs), the example input's shape and dtype, the
removal history (module names, torch-pruning function names, channel indices) and the state dict.
``load_slim`` rebuilds the architecture, replays the removal on it and loads the weights. ``arch="auto"`` (with a
session) names the constructor itself (:func:`pruneviz.core.removal_arch.find_architecture`: torchvision models,
the demo models, classes whose arguments it can recover). ``export_onnx`` writes ONNX (torch's dynamo exporter,
the default since torch 2.9; the legacy TorchScript exporter as fallback) and checks ONNX Runtime against
PyTorch. :func:`slim_bytes` and :func:`onnx_bytes` give the same files as bytes (browser downloads), the first
one reloaded and checked.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, PrunevizError, RecipeMismatchError
from .files import atomic_write, load_checkpoint
from .removal import SlimResult, slim
from .removal_arch import Architecture, find_architecture
from .removal_graph import ForwardFn, replay
from .removal_rules import max_abs, max_abs_diff

FORMAT = "pruneviz-slim-model"
VERSION = 1
ONNX_TOLERANCE = 1e-4  # max |onnxruntime - torch| relative to max(1, max |torch output|)
EXAMPLE_LIMIT = 2**20  # example inputs up to this many elements are stored in the file (load_slim replays on it)


class OnnxExportError(PrunevizError):
    """The model could not be exported to ONNX, or ONNX Runtime disagrees with PyTorch."""


def arch_spec(arch: str | Callable) -> str:
    """``"package.module:name"`` for a constructor (a class or function importable at module level)."""
    if isinstance(arch, str):
        spec = arch
    else:
        spec = f"{getattr(arch, '__module__', '')}:{getattr(arch, '__qualname__', '')}"
    try:
        _import(spec)
    except CheckpointError as e:
        raise CheckpointError(f"the architecture {spec!r} is not importable ({e}); give arch as "
                              "'package.module:Constructor' (e.g. 'torchvision.models:resnet18').") from None
    return spec


def _import(spec: str) -> Callable:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name or "<" in name:
        raise CheckpointError(f"{spec!r} is not of the form 'package.module:Constructor'")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"cannot import {spec!r}: {e}") from None
    if not _safe_constructor(obj):
        raise CheckpointError(
            f"{spec!r} is neither an nn.Module class nor a torchvision model builder; pruneviz calls only those "
            "from a file (a file must not be able to run arbitrary functions). Pass build=... instead."
        )
    return obj


def _safe_constructor(obj: Any) -> bool:
    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    try:
        from torchvision import models

        return any(models.get_model_builder(n) is obj for n in models.list_models())
    except ImportError:
        return False


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise CheckpointError(f"{where} must be plain data (numbers, strings, lists, dicts), got {type(value).__name__}; "
                          "pass build=... to load_slim for anything else.")


def _arch(arch: str | Callable | Architecture | None, arch_kwargs: dict | None, source: Any) -> dict | None:
    if isinstance(arch, str) and arch == "auto":
        if not isinstance(source, nn.Module):
            raise PrunevizError("arch='auto' needs the session (save_slim(session, path, arch='auto', example_input=x))"
                                ", or name the constructor: arch=MyModel, arch_kwargs={...}.")
        arch = find_architecture(source)
    if isinstance(arch, Architecture):
        if not arch.found:
            raise CheckpointError(f"pruneviz cannot name the architecture to rebuild: {arch.reason}. Pass arch=MyModel "
                                  "and arch_kwargs={...} (its constructor and arguments), or arch=None and rebuild with "
                                  "load_slim(path, build=lambda: MyModel(...)).")
        arch, arch_kwargs = arch.spec, {**arch.kwargs, **(arch_kwargs or {})}
    return None if arch is None else {"spec": arch_spec(arch), "kwargs": _plain(arch_kwargs or {}, "arch_kwargs")}


def _payload(result: SlimResult, spec: dict | None, example_input: Any) -> dict:
    x = example_input
    if isinstance(x, torch.Tensor):
        input_spec = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
    else:
        input_spec = result.input_spec
    payload = {
        "format": FORMAT, "version": VERSION, "arch": spec, "input": input_spec,
        "history": _plain(result.history, "history"),
        "removed": dict(result.removed), "kept": [[k.name, k.reason, k.channels] for k in result.kept],
        "state_dict": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()},
        "torch": str(torch.__version__),
    }
    if isinstance(x, torch.Tensor) and x.numel() <= EXAMPLE_LIMIT:
        payload["example"] = x.detach().cpu().clone()  # replayed on, instead of zeros (token ids must be valid)
    return payload


def save_slim(result_or_session: SlimResult | Any, path: str | os.PathLike, *,
              arch: str | Callable | Architecture | None, arch_kwargs: dict | None = None, example_input: Any = None,
              forward_fn: ForwardFn | None = None) -> Path:
    """Atomically write the slim model (a :class:`SlimResult`, or a session: it is slimmed first with
    ``example_input``) so that :func:`load_slim` rebuilds it in a fresh process.

    ``arch``: the constructor of the *unpruned* architecture (``"torchvision.models:resnet18"``, a class such as
    ``DigitsCNN``, ``"auto"`` with a session to find it, or None if the loader will pass ``build=``);
    ``arch_kwargs``: plain keyword arguments for it.
    """
    source = None if isinstance(result_or_session, SlimResult) else getattr(result_or_session, "model", None)
    spec = _arch(arch, arch_kwargs, source)
    if isinstance(result_or_session, SlimResult):
        result = result_or_session
    else:
        if example_input is None:
            raise PrunevizError("save_slim(session, ...) needs example_input= (one batch) to slim the model first.")
        result = slim(result_or_session, example_input, forward_fn=forward_fn)
    payload = _payload(result, spec, example_input)
    try:
        return atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}. Choose a file in a folder you can write "
                              "to; nothing was written.") from None


def slim_bytes(result: SlimResult, source: nn.Module, example_input: Any, *,
               arch: str | Callable | Architecture = "auto", arch_kwargs: dict | None = None,
               forward_fn: ForwardFn | None = None, check: bool = True) -> bytes:
    """The file :func:`save_slim` writes, as bytes (a browser download). ``source``: the unpruned (or masked)
    model, for ``arch="auto"``. ``check``: reload the bytes with :func:`load_slim` and compare the outputs with
    ``result.model`` on ``example_input`` (:class:`CheckpointError` if they differ)."""
    payload = _payload(result, _arch(arch, arch_kwargs, source), example_input)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    if check:
        model = load_slim(io.BytesIO(data), forward_fn=forward_fn)
        run = forward_fn or (lambda m, x: m(x))
        with torch.inference_mode():
            want, got = run(result.model.eval(), example_input), run(model, example_input)
        diff = max_abs_diff(want, got)
        if not diff <= 1e-6 * max(1.0, max_abs(want)):
            raise CheckpointError(f"the smaller model reloaded from its file computes different outputs (by {diff:.3g})"
                                  "; the file was not offered. Use the masked model forms.")
    return data


def load_slim(path: str | os.PathLike | io.BytesIO, *, build: Callable[[], nn.Module] | None = None,
              example_input: Any = None, forward_fn: ForwardFn | None = None) -> nn.Module:
    """Rebuild the slim model saved by :func:`save_slim` (weights only: nothing in the file is executed).

    ``path``: the file (or its bytes in a ``BytesIO``). ``build()`` makes the unpruned architecture when the file
    names none (or to override it); ``example_input`` is needed only when the saved input was not a tensor (e.g. a
    dict, with ``forward_fn``).
    """
    data = load_checkpoint(path)
    path = "the slim model's bytes" if isinstance(path, io.BytesIO) else path
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a slim model written by pruneviz.save_slim.")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer pruneviz (format version {data['version']}); upgrade.")
    if build is not None:
        model = build()
    elif data.get("arch"):
        model = _import(data["arch"]["spec"])(**data["arch"]["kwargs"])
    else:
        raise CheckpointError(f"{path} names no architecture: pass build=lambda: MyModel(...) to load_slim.")
    if example_input is None and isinstance(data.get("example"), torch.Tensor):
        example_input = data["example"]
    needs_graph = any(str(step.get("fn", "")).startswith("prune_") for step in data.get("history", []))
    if example_input is None and needs_graph:
        spec = data.get("input")
        if not spec:
            raise CheckpointError(f"{path} has no example input shape (the model takes non-tensor inputs): pass "
                                  "example_input= (and forward_fn=) to load_slim.")
        dtype = getattr(torch, str(spec.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{path} names an unknown input dtype {spec.get('dtype')!r}.")
        example_input = torch.zeros([int(n) for n in spec["shape"]], dtype=dtype)
    try:
        replay(model, data["history"], example_input, forward_fn)
        model.load_state_dict(data["state_dict"], strict=True)
    except (RuntimeError, KeyError, IndexError, ValueError, AttributeError) as e:
        if isinstance(e, PrunevizError):
            raise
        raise RecipeMismatchError(
            f"{path} does not fit the architecture it was loaded into ({type(e).__name__}: {str(e)[:300]}). "
            "Build the same unpruned architecture (same constructor and arguments) that was slimmed."
        ) from None
    return model.eval()


@dataclass(frozen=True)
class OnnxExport:
    """Where the ONNX file went, which exporter wrote it, and how far ONNX Runtime is from PyTorch."""

    path: Path | None
    exporter: str
    max_abs_diff: float | None
    tolerance: float


def _to_bytes(model: nn.Module, x: torch.Tensor, dynamic_batch: bool, exporter: str) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
            program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=shapes, verbose=False)
            with tempfile.TemporaryDirectory() as tmp:
                program.save(os.path.join(tmp, "m.onnx"))
                return Path(tmp, "m.onnx").read_bytes()
        f = io.BytesIO()
        axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes=axes)
        return f.getvalue()


def onnx_session(model_bytes_or_path: bytes | str | os.PathLike, threads: int = 1):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (and one inter-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    src = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def _onnx_data(model: nn.Module, example_input: torch.Tensor, dynamic_batch: bool, exporter: str, check: bool,
               tolerance: float) -> tuple[bytes, str, float | None]:
    if exporter not in ("dynamo", "legacy"):
        raise OnnxExportError(f"unknown exporter {exporter!r}; choose 'dynamo' or 'legacy'.")
    if not isinstance(example_input, torch.Tensor):
        raise OnnxExportError(f"ONNX export takes one tensor input; the example input is a {type(example_input).__name__}"
                              ". Export with torch.onnx.export yourself, or serve the model with PyTorch.")
    model = model.eval()
    errors: list[str] = []
    ops_seen: set[str] = set()
    for name in dict.fromkeys([exporter, "legacy"]):
        try:
            data = _to_bytes(model, example_input, dynamic_batch, name)
            exporter = name
            break
        except Exception as e:  # noqa: BLE001 - exporters raise many kinds (unsupported op, tracing failures)
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[:1]
            errors.append(f"{name}: {type(e).__name__}: {first[0][:200] if first else ''}")
            ops_seen.update(re.findall(r"aten[:.]{1,2}[A-Za-z_][\w]*", f"{e} {e.__cause__}"))
    else:
        which = f"unsupported operator(s): {', '.join(sorted(ops_seen))}; " if ops_seen else ""
        raise OnnxExportError(f"the model could not be exported to ONNX ({which}" + "; ".join(errors) + "). "
                              "Usually an operator ONNX has no equivalent for: replace it, or serve the model with "
                              "PyTorch.")
    diff = _check(model, example_input, data, dynamic_batch, tolerance) if check else None
    return data, exporter, diff


def onnx_bytes(model: nn.Module, example_input: torch.Tensor, *, dynamic_batch: bool = True, exporter: str = "dynamo",
               check: bool = True, tolerance: float = ONNX_TOLERANCE) -> tuple[bytes, OnnxExport]:
    """What :func:`export_onnx` writes, as bytes, with its :class:`OnnxExport` (``path`` None)."""
    data, used, diff = _onnx_data(model, example_input, dynamic_batch, exporter, check, tolerance)
    return data, OnnxExport(None, used, diff, tolerance)


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *, dynamic_batch: bool = True,
                exporter: str = "dynamo", check: bool = True, tolerance: float = ONNX_TOLERANCE) -> OnnxExport:
    """Export ``model`` (one tensor in, one tensor out) to ONNX at ``path`` atomically, and check that ONNX Runtime
    (CPUExecutionProvider) agrees with PyTorch within ``tolerance`` x max(1, max |output|) on ``example_input``
    (and on a batch of 2 with ``dynamic_batch``). ``exporter``: "dynamo" (falls back to "legacy" if it fails)."""
    if exporter not in ("dynamo", "legacy"):
        raise OnnxExportError(f"unknown exporter {exporter!r}; choose 'dynamo' or 'legacy'.")
    _check_destination(path)  # fail before a slow export
    data, used, diff = _onnx_data(model, example_input, dynamic_batch, exporter, check, tolerance)
    try:
        out = atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}. Choose a file in a folder you can write "
                              "to; nothing was written.") from None
    return OnnxExport(out, used, diff, tolerance)


def _check_destination(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a file name such as {path / 'model.onnx'}.")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise CheckpointError(f"cannot write {path}: {path.parent} {what}; choose a file in an existing folder.")


def _check(model: nn.Module, x: torch.Tensor, data: bytes, dynamic_batch: bool, tolerance: float) -> float:
    from .removal_rules import _tensors

    sess = onnx_session(data)
    name = sess.get_inputs()[0].name
    worst = 0.0
    second = x[:1] * 0.5 if x.is_floating_point() else x[:1]  # token ids stay valid ids
    batches = [x, torch.cat([x[:1], second])] if dynamic_batch else [x]
    for xb in batches:
        with torch.inference_mode():
            refs = _tensors(model(xb))
        gots = [torch.from_numpy(g) for g in sess.run(None, {name: xb.numpy()})]
        if len(gots) != len(refs) or any(g.shape != r.shape for g, r in zip(gots, refs, strict=False)):
            raise OnnxExportError(f"ONNX Runtime returned shapes {[tuple(g.shape) for g in gots]}, PyTorch "
                                  f"{[tuple(r.shape) for r in refs]}; the file was not written.")
        for got, ref in zip(gots, refs, strict=True):
            diff = float((got.double() - ref.double()).abs().max()) if ref.numel() else 0.0
            worst = max(worst, diff)
            if diff > tolerance * max(1.0, float(ref.abs().max()) if ref.numel() else 0.0):
                raise OnnxExportError(f"ONNX Runtime's outputs differ from PyTorch's by {diff:.3g} (tolerance "
                                      f"{tolerance:g} x output scale); the file was not written.")
    return worst
