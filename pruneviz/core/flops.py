"""FLOPs of the dense, the sparse (zeros skipped) and the physically slimmed model.

The slimmed model removes the output channels that structured pruning zeroed, using torch-pruning's
dependency graph (so BatchNorm channels and the next layer's input channels go too). A channel whose
removal is coupled to another layer's channels (e.g. a residual connection) is kept and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from .export import pruned_copy
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

    @property
    def sparse_reduction(self) -> float:
        return self.dense / max(self.sparse, 1)

    @property
    def structured_reduction(self) -> float:
        return self.dense / max(self.structured, 1)


def _out_channel_fn(module: nn.Module):
    # torch-pruning's conv pruner handles transposed convolutions too (it reads module.transposed)
    if isinstance(module, nn.modules.conv._ConvNd):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    return None


def slim_copy(session: PruningSession, example_input: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """A copy of the model with structurally pruned output channels physically removed.

    Returns the model and the layers whose channels could not be removed on their own (coupled).
    """
    with session.lock:  # one consistent view of the masks
        model = pruned_copy(session, "permanent").eval()
        keeps = {t.name: session.channel_mask(t.name) for t in session.targets}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    coupled: list[str] = []
    for t in session.targets:
        keep = keeps[t.name]
        if keep is None or bool(keep.all()) or t.name == session.output_layer:
            continue
        module = model.get_submodule(t.module_name)
        fn = _out_channel_fn(module)
        if fn is None or not keep.any():
            coupled.append(t.name)
            continue
        group = graph.get_pruning_group(module, fn, idxs=(~keep).nonzero().flatten().tolist())
        others = [
            dep.target.module for dep, _ in group
            if dep.target.module is not module and _out_channel_fn(dep.target.module) is not None
            and graph.is_out_channel_pruning_fn(dep.handler)
        ]
        if others or not graph.check_pruning_group(group):
            coupled.append(t.name)
            continue
        group.prune()
    return model, coupled


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
        slim, coupled = slim_copy(self.session, self.example_input)
        structured, _ = count_flops(slim, self.example_input)
        return FlopsReport(self.dense, sparse, structured, coupled)
