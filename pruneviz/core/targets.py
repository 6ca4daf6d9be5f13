"""Which tensors of a model can be pruned: discovery, stable names, shapes."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import NoPrunableTensorsError, UnknownLayerError, suggest

#: Module types whose weights pruneviz prunes by default.
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.RNNBase,  # RNN, LSTM, GRU
)


@dataclass(frozen=True)
class Target:
    """One prunable weight tensor.

    ``name`` is the parameter's stable dotted name (``features.0.weight``, ``lstm.weight_hh_l0``);
    ``channel_dim`` is the dimension that indexes output channels (1 for transposed convolutions).
    """

    name: str
    module_name: str
    param_name: str
    kind: str
    shape: tuple[int, ...]
    channel_dim: int = 0
    bias_name: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def channels(self) -> int:
        return self.shape[self.channel_dim]

    @property
    def channel_size(self) -> int:
        return self.numel // max(self.channels, 1)


def _module_weights(module_name: str, module: nn.Module) -> list[Target]:
    prefix = f"{module_name}." if module_name else ""
    kind = type(module).__name__
    if isinstance(module, nn.RNNBase):
        out = []
        for pname, p in module.named_parameters(recurse=False):
            if pname.startswith("weight_"):
                out.append(Target(prefix + pname, module_name, pname, kind, tuple(p.shape)))
        return out
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return []
    channel_dim = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
    bias = getattr(module, "bias", None)
    bias_name = None
    if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.shape[0] == weight.shape[channel_dim]:
        bias_name = prefix + "bias"
    return [Target(prefix + "weight", module_name, "weight", kind, tuple(weight.shape), channel_dim, bias_name)]


def _matches(target: Target, selectors: Iterable[str | type]) -> bool:
    for sel in selectors:
        if isinstance(sel, type):
            if target.kind == sel.__name__:
                return True
        elif fnmatch.fnmatchcase(target.name, sel) or fnmatch.fnmatchcase(target.module_name, sel):
            return True
    return False


def find_targets(
    model: nn.Module,
    include: Sequence[str | type] | None = None,
    exclude: Sequence[str | type] | None = None,
    types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
) -> list[Target]:
    """Discover the prunable weight tensors of ``model`` in module order.

    ``include``/``exclude`` take parameter or module names (shell patterns such as ``"layer4.*"``)
    or module types. Biases and norm layers are never targets.
    """
    all_targets: list[Target] = []
    for mname, module in model.named_modules():
        if isinstance(module, tuple(types)):
            all_targets.extend(_module_weights(mname, module))
    if not all_targets:
        raise NoPrunableTensorsError(
            f"{type(model).__name__} has no prunable tensors: pruneviz prunes the weights of "
            "Linear, Conv1d/2d/3d, ConvTranspose and RNN/LSTM/GRU modules, and found none. "
            "Pass types=... to add module types."
        )
    names = [t.name for t in all_targets]
    include = [include] if isinstance(include, str | type) else include  # one pattern is a list of one
    exclude = [exclude] if isinstance(exclude, str | type) else exclude
    for selectors, label in ((include, "include"), (exclude, "exclude")):
        for sel in selectors or ():
            if not isinstance(sel, str | type):
                raise UnknownLayerError(
                    f"{label} holds {type(sel).__name__} {sel!r}: give layer names or patterns (strings) or module "
                    "types.")
            if isinstance(sel, str) and not any(_matches(t, [sel]) for t in all_targets):
                raise UnknownLayerError(
                    f"{label}={sel!r} matches no prunable tensor of {type(model).__name__}."
                    + suggest(sel, names)
                )
    targets = all_targets
    if include:
        targets = [t for t in targets if _matches(t, include)]
    if exclude:
        targets = [t for t in targets if not _matches(t, exclude)]
    if not targets:
        raise NoPrunableTensorsError(
            f"include={include!r} / exclude={exclude!r} leave no prunable tensor; "
            f"the model has: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}."
        )
    return targets


def get_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter (or buffer) called ``name`` in ``model``."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return getattr(module, attr)


def matching(targets: Sequence[Target], selectors: Sequence[str | type], label: str) -> list[str]:
    """Names of the targets that ``selectors`` (names, shell patterns or module types) match, in target order;
    an :class:`UnknownLayerError` for a name or pattern that matches nothing."""
    names = [t.name for t in targets]
    for sel in selectors:
        if not isinstance(sel, str | type):
            raise UnknownLayerError(f"{label}={sel!r}: give layer names or patterns (strings) or module types.")
        if isinstance(sel, str) and not any(_matches(t, [sel]) for t in targets):
            raise UnknownLayerError(f"{label}={sel!r} matches no prunable tensor." + suggest(sel, names))
    return [t.name for t in targets if _matches(t, selectors)]
