"""FLOPs of the dense, the sparse (zeros skipped) and the physically slimmed model.

The slimmed model removes the output channels that structured pruning zeroed (:mod:`pruneviz.core.removal`,
torch-pruning's dependency graph: BatchNorm channels and the next layer's input channels go too). A channel
whose removal is coupled to another layer's channels (e.g. a residual connection) is kept and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .removal import KeptLayer, slim
from .session import PruningSession
from .stats import count_flops


@dataclass(frozen=True)
class FlopsReport:
    """FLOPs of one forward pass on the example input.

    ``sparse``: multiply-adds with pruned weights skipped (a sparse kernel's best case; dense CPU
    kernels gain nothing from zeros). ``structured``: after physically removing pruned channels.
    """

    dense: int
    sparse: int
    structured: int
    coupled_layers: list[str] = field(default_factory=list)
    kept: list[KeptLayer] = field(default_factory=list)  # the same layers, each with the reason in words

    @property
    def sparse_reduction(self) -> float:
        return self.dense / max(self.sparse, 1)

    @property
    def structured_reduction(self) -> float:
        return self.dense / max(self.structured, 1)


def slim_copy(session: PruningSession, example_input: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """A copy of the model with structurally pruned output channels physically removed.

    Returns the model and the layers whose pruned channels stay in it (coupled to layers that keep them, or
    otherwise not removable; each with its reason in :func:`pruneviz.core.removal.slim`'s ``kept``).
    """
    result = slim(session, example_input)  # check=True: a mis-traced coupling is found and kept
    return result.model, result.kept_names


class FlopsCounter:
    """Counts FLOPs for a session's model on ``example_input`` (one sample is enough); the dense count is cached."""

    def __init__(self, session: PruningSession, example_input: torch.Tensor) -> None:
        self.session = session
        self.example_input = example_input
        with session.lock:
            self.dense, self.per_module = count_flops(session.model, example_input)

    def sparse(self) -> int:
        """Dense FLOPs with each pruned layer's share scaled by the fraction of its weights kept."""
        total = self.dense
        for t in self.session.targets:
            layer = self.per_module.get(t.module_name, 0)
            if t.kind.startswith(("LSTM", "GRU", "RNN")):
                layer = layer * t.numel // max(1, sum(x.numel for x in self.session.targets
                                                      if x.module_name == t.module_name))
            total -= int(layer * self.session.zeros(t.name) / t.numel)
        return total

    def report(self) -> FlopsReport:
        """Dense, sparse and structured FLOPs for the session's current plan.

        Holds the session's lock only while it copies the masked model, not while it counts.
        """
        with self.session.lock:
            sparse = self.sparse()
            structured_scope = any(self.session.channel_mask(n) is not None for n in self.session.names)
        if not structured_scope:
            return FlopsReport(self.dense, sparse, self.dense, [])
        result = slim(self.session, self.example_input)
        structured, _ = count_flops(result.model, self.example_input)
        return FlopsReport(self.dense, sparse, structured, result.kept_names, result.kept)
