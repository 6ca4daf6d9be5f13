"""What you actually get: the dense, the masked and the physically smaller model side by side, measured.

:func:`measure_actual` copies the session's model (under its lock, briefly), slims it
(:func:`pruneviz.core.removal.slim`), exports the smaller model to ONNX, and then, without any lock, counts
parameters, MACs and file sizes and times one forward pass of each form at each batch size
(:func:`pruneviz.core.latency.measure_latency`, ``threads`` intra-op threads). Masks alone only write zeros into
dense tensors: the masked model has the dense model's size, file and speed on a CPU; only removed channels (or
hidden units) make it smaller and faster. MACs fall faster than time (memory traffic, per-layer overheads and
the layers that stay), so the MAC ratio and the measured speed-up are reported side by side.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import PrunevizError
from .latency import WARMUP_S, LatencyReport, measure_latency, measure_onnx_latency, pooled
from .removal import KeptLayer, SlimResult, slim
from .targets import get_tensor
from .tasks import call_model

FORMS = ("dense", "masked", "removed", "onnx")
LABELS = {"dense": "dense (original)", "masked": "masked (zeros)", "removed": "channels removed",
          "onnx": "removed, ONNX Runtime"}
#: ``progress(done, total, what)``
Progress = Callable[[int, int, str], None]


class MeasureCancelled(PrunevizError):  # noqa: N818 - a stop requested by the caller, not a failure
    """The measurement was stopped (``cancel()`` returned True), e.g. because the plan changed."""


@dataclass(frozen=True)
class FormFigures:
    """One form of the model: parameters (all, and nonzero), MACs per forward pass on the example input, the
    size of its file, and its latency (None when not measured; ``note`` says why)."""

    form: str
    params: int
    nonzero: int
    macs: int | None
    file_bytes: int | None
    latency: LatencyReport | None = None
    note: str = ""

    @property
    def label(self) -> str:
        return LABELS[self.form]


@dataclass(frozen=True)
class ActualReport:
    """Figures of every form for the session's plan at ``generation`` (see the module notes)."""

    generation: int
    structured: bool
    forms: dict[str, FormFigures]
    batch_sizes: tuple[int, ...]
    threads: int
    weights_removed: float  # fraction of the prunable weights that are zero (the masks)
    kept: list[KeptLayer] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0
    slim: SlimResult | None = None

    def median_ms(self, form: str, batch_size: int) -> float | None:
        f = self.forms.get(form)
        if f is None or f.latency is None:
            return None
        try:
            return f.latency.row(batch_size).median_ms
        except KeyError:
            return None

    def speedup(self, form: str, batch_size: int) -> float | None:
        """Dense time / this form's time at ``batch_size`` (None when either was not measured)."""
        dense, this = self.median_ms("dense", batch_size), self.median_ms(form, batch_size)
        return None if dense is None or not this else dense / this

    @property
    def macs_ratio(self) -> float | None:
        """MACs of the smaller model / dense MACs (None without structured pruning)."""
        d, r = self.forms["dense"].macs, self.forms["removed"].macs if "removed" in self.forms else None
        return None if not d or r is None else r / d

    @property
    def params_ratio(self) -> float:
        removed = self.forms.get("removed")
        return (removed.params if removed else self.forms["dense"].params) / max(self.forms["dense"].params, 1)


def _file_size(state: dict[str, torch.Tensor]) -> int:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def _nonzero(model: nn.Module) -> int:
    return sum(int(p.count_nonzero()) for p in model.parameters())


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _copies(session: Any) -> tuple[int, nn.Module, nn.Module, float, bool]:
    """(generation, dense copy, masked copy, fraction of prunable weights zero, structured?), under the lock."""
    with session.lock:
        generation = session.generation
        masked = copy.deepcopy(session.model).eval()
        dense = copy.deepcopy(masked)
        with torch.no_grad():
            for t in session.targets:
                get_tensor(dense, t.name).copy_(session.original(t.name))
                for name in session.channel_tensors(t.name):  # bias, BatchNorm scale and shift
                    get_tensor(dense, name).copy_(session.original_tensor(name))
        summary = session.summary()
        structured = any(session.channel_mask(n) is not None for n in session.names)
    return generation, dense, masked, summary.sparsity, structured


def measure_actual(session: Any, example_input: Any, *, batch_sizes: Sequence[int] = (1, 8), threads: int = 1,
                   min_run_time: float = 0.6, rounds: int = 3, onnx: bool = True, latency: bool = True,
                   forward_fn: Callable[[nn.Module, Any], Any] | None = None,
                   progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> ActualReport:
    """Measure the dense, masked and physically smaller forms of ``session``'s current plan (see the module notes).

    ``example_input``: one sample (or batch) the model takes; latency repeats its first sample to each of
    ``batch_sizes``. ``onnx``: also export the smaller model (legacy exporter, checked against PyTorch) and time
    it in ONNX Runtime. Each form is timed for ``min_run_time`` seconds per batch size, in ``rounds`` interleaved
    rounds, every other one in reverse order, pooled: a burst of load on a shared machine that slows one round
    moves the median little, and a steady drift hits every form alike. ``latency=False`` counts only. ``cancel()`` is checked between steps
    (:class:`MeasureCancelled`); ``progress(done, total, what)`` reports each step. The session is never changed
    and its lock is held only while the models are copied.
    """
    from .slim_export import onnx_bytes, slim_bytes

    t0 = time.perf_counter()
    fwd = forward_fn or call_model
    sizes = tuple(dict.fromkeys(int(b) for b in batch_sizes))
    generation, dense, masked, zeros, structured = _copies(session)
    forms_to_time = ["dense", "masked"] + (["removed"] + (["onnx"] if onnx else []) if structured else [])
    rounds = max(1, int(rounds))
    total = 1 + (rounds * len(forms_to_time) if latency else 0)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if cancel is not None and cancel():
            raise MeasureCancelled("stopped: the plan changed while measuring.")
        if progress is not None:
            progress(done, total, what)
        done += 1

    step("removing the pruned channels")
    result = slim(session, example_input, forward_fn=fwd) if structured else None
    if session.generation != generation:
        raise MeasureCancelled("stopped: the plan changed while measuring.")
    dense_file = _file_size(dense.state_dict())
    macs_dense = result.macs_before if result is not None else None
    forms: dict[str, FormFigures] = {
        "dense": FormFigures("dense", _params(dense), _nonzero(dense), macs_dense, dense_file),
        "masked": FormFigures("masked", _params(masked), _nonzero(masked), macs_dense, _file_size(masked.state_dict()),
                              note="the same dense tensors, with zeros written in"),
    }
    onnx_data: bytes | None = None
    note = ""
    if result is not None:
        small = result.model
        try:
            size: int | None = len(slim_bytes(result, masked, example_input, arch=None, check=False))
        except PrunevizError:
            size = _file_size(small.state_dict())
        forms["removed"] = FormFigures("removed", _params(small), _nonzero(small), result.macs_after, size,
                                       note=result.note)
        if onnx:
            try:
                onnx_data, _ = onnx_bytes(small, example_input, exporter="legacy")
                forms["onnx"] = FormFigures("onnx", _params(small), _nonzero(small), result.macs_after, len(onnx_data))
            except PrunevizError as e:
                forms["onnx"] = FormFigures("onnx", _params(small), _nonzero(small), result.macs_after, None,
                                            note=str(e))
    else:
        note = ("removal needs structured scope: masks alone only write zeros into the same dense tensors, so the "
                "model keeps its size and its speed on a CPU.")
    if latency:
        models = {"dense": dense, "masked": masked, "removed": result.model if result is not None else None}
        parts: dict[str, list[LatencyReport]] = {f: [] for f in forms_to_time}
        errors: dict[str, str] = {}
        for r in range(rounds):  # every other round in reverse order: a steady drift in load hits all forms alike
            for form in forms_to_time if r % 2 == 0 else forms_to_time[::-1]:
                step(f"timing the {LABELS[form]} model" + (f" (round {r + 1} of {rounds})" if rounds > 1 else ""))
                if form in errors or (form == "onnx" and onnx_data is None):
                    continue
                try:
                    warm = WARMUP_S if r == 0 else WARMUP_S / 4  # later rounds: already warm
                    if form == "onnx":
                        rep = measure_onnx_latency(onnx_data, example_input, batch_sizes=sizes, threads=threads,
                                                   min_run_time=min_run_time / rounds, warmup=warm)
                    else:
                        rep = measure_latency(models[form], example_input, batch_sizes=sizes, threads=threads,
                                              min_run_time=min_run_time / rounds, forward_fn=fwd, warmup=warm)
                    parts[form].append(rep)
                except PrunevizError as e:
                    errors[form] = str(e)
        for form in forms_to_time:
            f = forms[form]
            lat = pooled(parts[form]) if parts[form] else None
            forms[form] = FormFigures(f.form, f.params, f.nonzero, f.macs, f.file_bytes, lat,
                                      errors.get(form, f.note))
    if progress is not None:
        progress(total, total, "done")
    return ActualReport(generation, structured, forms, sizes, threads, zeros,
                        list(result.kept) if result is not None else [], note, time.perf_counter() - t0, result)
