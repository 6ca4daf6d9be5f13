"""Honest CPU latency: ``torch.utils.benchmark`` with the thread count fixed, median and IQR per batch size.

torch-pruning's own ``measure_latency`` uses CUDA timers and fails on CPU. Here each batch size is timed
separately (batch 1 and batch N answer different questions), after a warm-up, in inference mode, with
``torch.utils.benchmark.Timer(..., num_threads=threads).blocked_autorange(min_run_time=...)``; ONNX Runtime
gets the same number of intra-op threads. Zeroed weights do not make dense CPU kernels faster: compare the
masked model with the physically slimmed one (:func:`pruneviz.core.removal.slim`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import PrunevizError
from .removal_graph import ForwardFn, default_forward

# torch.utils.benchmark imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" at import on a
# CPU-only machine with a CUDA build of torch: a red line in every notebook that opens the explorer, about
# nothing pruneviz uses (it times on the CPU). Only that import-time message is silenced.
_cpp_log = logging.getLogger("torch.utils.cpp_extension")
_cpp_level = _cpp_log.level
_cpp_log.setLevel(logging.ERROR)
try:
    from torch.utils import benchmark
finally:
    _cpp_log.setLevel(_cpp_level)

WARMUP_S = 0.1  # at least this long (and one call) of untimed runs before each measurement, after a first check call


class LatencyError(PrunevizError):
    """Latency cannot be measured as asked (bad batch sizes or threads, or the model fails on the input)."""


@dataclass(frozen=True)
class LatencyRow:
    """One batch size: median and interquartile range of one forward pass, in milliseconds."""

    batch_size: int
    median_ms: float
    iqr_ms: float
    runs: int
    threads: int
    times_ms: tuple[float, ...] = ()  # each timed block's per-call time (to pool several measurements)

    @property
    def per_sample_ms(self) -> float:
        return self.median_ms / self.batch_size


@dataclass(frozen=True)
class LatencyReport:
    """Latency per batch size for one backend ("torch" or "onnxruntime")."""

    backend: str
    threads: int
    min_run_time: float
    rows: list[LatencyRow] = field(default_factory=list)

    def row(self, batch_size: int) -> LatencyRow:
        for r in self.rows:
            if r.batch_size == batch_size:
                return r
        raise KeyError(f"no measurement at batch size {batch_size}; measured: {[r.batch_size for r in self.rows]}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data: ``{"backend", "threads", "min_run_time", "b1": {"median_ms", "iqr_ms", ...}, ...}``."""
        out: dict[str, Any] = {"backend": self.backend, "threads": self.threads, "min_run_time": self.min_run_time}
        for r in self.rows:
            out[f"b{r.batch_size}"] = {k: v for k, v in asdict(r).items() if k not in ("batch_size", "times_ms")}
        return out


def pooled(reports: Sequence[LatencyReport]) -> LatencyReport:
    """Several measurements of one model (e.g. rounds interleaved with other models, so a burst of load on a shared
    machine hits every model alike) as one report: each batch size's timed blocks pooled, median and IQR of all."""
    if not reports:
        raise LatencyError("nothing to pool: pass at least one LatencyReport.")
    first = reports[0]
    rows = []
    for r0 in first.rows:
        parts = [rep.row(r0.batch_size) for rep in reports]
        times = tuple(t for p in parts for t in (p.times_ms or (p.median_ms,)))
        q = torch.tensor(times, dtype=torch.float64)
        q1, med, q3 = (float(v) for v in torch.quantile(q, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)))
        rows.append(LatencyRow(r0.batch_size, med, q3 - q1, sum(p.runs for p in parts), r0.threads, times))
    return LatencyReport(first.backend, first.threads, sum(rep.min_run_time for rep in reports), rows)


def batched(x: Any, batch_size: int) -> Any:
    """``x`` with its first sample repeated ``batch_size`` times along dim 0 (tensors inside dicts/tuples too)."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            raise LatencyError("the example input is a scalar tensor; give a batch (dim 0 = samples).")
        return x[:1].expand(batch_size, *x.shape[1:]).contiguous()
    if isinstance(x, dict):
        return {k: batched(v, batch_size) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(batched(v, batch_size) for v in x)
    return x


def _check(batch_sizes: Sequence[int], threads: int, min_run_time: float) -> list[int]:
    sizes = list(batch_sizes)
    if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
        raise LatencyError(f"batch_sizes must be positive integers, got {batch_sizes!r}.")
    if not isinstance(threads, int) or threads < 1:
        raise LatencyError(f"threads must be a positive integer, got {threads!r}.")
    if not min_run_time > 0:
        raise LatencyError(f"min_run_time must be > 0 seconds, got {min_run_time!r}.")
    if threads > (os.cpu_count() or 1):
        raise LatencyError(f"threads={threads} exceeds this machine's {os.cpu_count()} CPUs; timings would be noise.")
    return sizes


def _time(fn: Callable[[], Any], threads: int, min_run_time: float,
          warmup: float = WARMUP_S) -> tuple[float, float, int, tuple[float, ...]]:
    t_end = time.perf_counter() + warmup
    for _ in range(1000):  # warm-up: allocator, one-off kernel selection, lazy init
        fn()
        if time.perf_counter() >= t_end:  # (the caller already ran it once to check the input)
            break
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3, m.iqr * 1e3, len(m.times) * m.number_per_run, tuple(t * 1e3 for t in m.times)


def measure_latency(model: nn.Module, example_input: Any, *, batch_sizes: Sequence[int] = (1, 32), threads: int = 1,
                    min_run_time: float = 1.0, forward_fn: ForwardFn | None = None,
                    warmup: float = WARMUP_S) -> LatencyReport:
    """Time one forward pass of ``model`` at each batch size (the example's first sample repeated), with
    ``threads`` intra-op threads, in inference mode and eval mode (the model's mode is restored), after
    ``warmup`` seconds of untimed calls."""
    sizes = _check(batch_sizes, threads, min_run_time)
    forward_fn = forward_fn or default_forward
    was_training, was_threads = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)  # the warm-up too runs as it will be timed
    rows = []
    try:
        for b in sizes:
            xb = batched(example_input, b)

            def run(xb: Any = xb) -> None:
                with torch.inference_mode():
                    forward_fn(model, xb)

            try:
                run()
            except Exception as e:  # noqa: BLE001 - any failure here is the input's or the model's
                raise LatencyError(f"the model fails on the example input at batch size {b} ({type(e).__name__}: "
                                   f"{str(e)[:200]}); pass an input it accepts.") from None
            median, iqr, runs, times = _time(run, threads, min_run_time, warmup)
            rows.append(LatencyRow(b, median, iqr, runs, threads, times))
    finally:
        model.train(was_training)
        torch.set_num_threads(was_threads)
    return LatencyReport("torch", threads, min_run_time, rows)


def measure_onnx_latency(path_or_bytes: str | os.PathLike | bytes, example_input: torch.Tensor, *,
                         batch_sizes: Sequence[int] = (1, 32), threads: int = 1,
                         min_run_time: float = 1.0, warmup: float = WARMUP_S) -> LatencyReport:
    """The same in ONNX Runtime (CPUExecutionProvider, ``threads`` intra-op threads, sequential execution).

    The ONNX model must take a dynamic batch dimension for batch sizes other than the exported one.
    """
    from .slim_export import onnx_session

    sizes = _check(batch_sizes, threads, min_run_time)
    sess = onnx_session(path_or_bytes, threads=threads)
    got = sess.get_session_options().intra_op_num_threads
    name = sess.get_inputs()[0].name
    rows = []
    for b in sizes:
        feed = {name: batched(example_input, b).numpy()}

        def run(feed: dict = feed) -> None:
            sess.run(None, feed)

        try:
            run()
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
            raise LatencyError(f"ONNX Runtime fails at batch size {b} ({type(e).__name__}: {str(e)[:200]}); export "
                               "with dynamic_batch=True to time other batch sizes.") from None
        median, iqr, runs, times = _time(run, threads, min_run_time, warmup)
        rows.append(LatencyRow(b, median, iqr, runs, got, times))
    return LatencyReport("onnxruntime", got, min_run_time, rows)
