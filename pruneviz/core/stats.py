"""Numbers about a (pruned) model: parameters, nonzeros, compression, FLOPs, bytes, latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class LayerStats:
    """One prunable tensor's counts now."""

    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    channels_pruned: int = 0

    @property
    def nonzero(self) -> int:
        return self.numel - self.zeros

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class Summary:
    """Model totals. ``compression`` = all parameters / parameters left (counting every parameter)."""

    total_params: int
    prunable_params: int
    pruned_params: int

    @property
    def nonzero_params(self) -> int:
        return self.total_params - self.pruned_params

    @property
    def sparsity(self) -> float:
        """Fraction of the prunable weights that are pruned."""
        return self.pruned_params / self.prunable_params if self.prunable_params else 0.0

    @property
    def compression(self) -> float:
        return self.total_params / max(self.nonzero_params, 1)

    @property
    def dense_bytes(self) -> int:
        """float32 bytes of all parameters."""
        return 4 * self.total_params

    @property
    def sparse_bytes(self) -> int:
        """Bytes of a sparse encoding of the prunable weights (value + 1-bit mask) plus the rest dense."""
        rest = self.total_params - self.prunable_params
        return 4 * (rest + self.prunable_params - self.pruned_params) + (self.prunable_params + 7) // 8


def summarize(model: nn.Module, layers: list[LayerStats]) -> Summary:
    """Totals of ``model`` given the per-layer counts of its prunable tensors."""
    total = sum(p.numel() for p in model.parameters())
    return Summary(total, sum(s.numel for s in layers), sum(s.zeros for s in layers))


def count_flops(model: nn.Module, example_input: Any) -> tuple[int, dict[str, int]]:
    """Dense FLOPs of one forward pass on ``example_input`` (torch's FLOP counter), in total and per module
    (keyed by the module's dotted name as in ``named_modules``; the root is ``""``)."""
    from .tasks import call_model

    was_training = model.training
    model.eval()
    # attention's inference fast path runs fused kernels the FLOP counter does not see: with gradients enabled
    # (thread-local, unlike torch.backends.mha's global switch) the layers take their plain, counted path
    attention = any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    mode = torch.enable_grad() if attention else torch.inference_mode()
    try:
        with mode, FlopCounterMode(display=False) as counter:
            call_model(model, example_input)
    finally:
        model.train(was_training)
    root = type(model).__name__
    per_module = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        # the counter names modules "<RootClass>.<dotted.name>"; the root itself is ""
        key = "" if name == root else name[len(root) + 1 :] if name.startswith(root + ".") else name
        per_module[key] = sum(ops.values())
    return counter.get_total_flops(), per_module


def measure_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass on ``example_input`` (inference mode)."""
    times = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                model(example_input)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times)
