"""Which tensors of a model can be pruned: discovery, stable names, shapes, and what is left out and why.

A target is one weight tensor. In structured scope it is pruned by *units*: a conv's output channels; a
recurrent layer's hidden units (unit h owns row h of every gate block: i, f, g, o for an LSTM); an
attention layer's heads (head h owns rows h*d..(h+1)*d of each of the q, k and v blocks of the packed
``in_proj_weight``); an embedding's dimensions. Targets that must lose the same units (an RNN layer's
``weight_ih`` and ``weight_hh``) share a ``unit_group``.
"""

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
    nn.MultiheadAttention,  # its packed in_proj_weight (out_proj is a Linear)
)
#: opt-in (``embeddings=True``): word embeddings are usually the most sensitive tensor of a text model
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class Target:
    """One prunable weight tensor.

    ``name`` is the parameter's stable dotted name (``features.0.weight``, ``lstm.weight_hh_l0``);
    ``channel_dim`` is the dimension that indexes output rows (1 for transposed convolutions and embeddings).
    Along it the rows form ``gates`` blocks, each of ``channels`` units of ``unit_size`` rows (see the module
    docstring); a plain layer has one block of one-row units.
    """

    name: str
    module_name: str
    param_name: str
    kind: str
    shape: tuple[int, ...]
    channel_dim: int = 0
    bias_name: str | None = None
    gates: int = 1
    unit_size: int = 1
    unit_group: str | None = None
    unit: str = "channel"

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def rows(self) -> int:
        """The size of ``channel_dim``."""
        return self.shape[self.channel_dim]

    @property
    def channels(self) -> int:
        """Structured units (output channels, hidden units, heads, embedding dimensions)."""
        return self.rows // max(self.gates * self.unit_size, 1)

    @property
    def channel_size(self) -> int:
        """Weights per structured unit."""
        return self.numel // max(self.channels, 1)


def _rnn_weights(prefix: str, module_name: str, module: nn.RNNBase) -> list[Target]:
    kind = type(module).__name__
    mode = "RNN" if module.mode.startswith("RNN") else module.mode
    gates = _GATES.get(mode, 1)
    params = dict(module.named_parameters(recurse=False))
    out = []
    for pname, p in params.items():
        if not pname.startswith("weight_"):
            continue
        if pname.startswith("weight_hr"):  # an LSTM projection: its own units, not hidden units
            out.append(Target(prefix + pname, module_name, pname, kind, tuple(p.shape), unit="projection unit"))
            continue
        suffix = pname.split("_", 2)[2]  # "l0" or "l0_reverse"
        bias = pname.replace("weight_", "bias_", 1)
        out.append(Target(prefix + pname, module_name, pname, kind, tuple(p.shape),
                          bias_name=prefix + bias if bias in params else None, gates=gates,
                          unit_group=f"{prefix}{suffix}", unit="hidden unit"))
    return out


def _attention_weights(prefix: str, module_name: str, module: nn.MultiheadAttention) -> list[Target]:
    kind = "MultiheadAttention"
    head_dim = module.embed_dim // module.num_heads
    if module.in_proj_weight is not None:
        bias = prefix + "in_proj_bias" if module.in_proj_bias is not None else None
        return [Target(prefix + "in_proj_weight", module_name, "in_proj_weight", kind,
                       tuple(module.in_proj_weight.shape), bias_name=bias, gates=3, unit_size=head_dim,
                       unit="head")]
    # separate q, k, v projections (kdim/vdim differ from embed_dim): their biases live in one packed tensor,
    # so a head cannot be zeroed exactly: rows are the units
    return [Target(prefix + p, module_name, p, kind, tuple(getattr(module, p).shape), unit="row")
            for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight") if getattr(module, p, None) is not None]


def _module_weights(module_name: str, module: nn.Module) -> list[Target]:
    prefix = f"{module_name}." if module_name else ""
    kind = type(module).__name__
    if isinstance(module, nn.RNNBase):
        return _rnn_weights(prefix, module_name, module)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_weights(prefix, module_name, module)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return []
    if isinstance(module, EMBEDDING_TYPES):  # structured: embedding dimensions (the next layer's inputs)
        return [Target(prefix + "weight", module_name, "weight", kind, tuple(weight.shape), 1, unit="dimension")]
    channel_dim = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
    bias = getattr(module, "bias", None)
    bias_name = None
    if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.shape[0] == weight.shape[channel_dim]:
        bias_name = prefix + "bias"
    unit = "output" if isinstance(module, nn.Linear) else "channel"
    return [Target(prefix + "weight", module_name, "weight", kind, tuple(weight.shape), channel_dim, bias_name,
                   unit=unit)]


def _matches(target: Target, selectors: Iterable[str | type]) -> bool:
    for sel in selectors:
        if isinstance(sel, type):
            if target.kind == sel.__name__:
                return True
        elif fnmatch.fnmatchcase(target.name, sel) or fnmatch.fnmatchcase(target.module_name, sel):
            return True
    return False


def _all_targets(model: nn.Module, types: Sequence[type[nn.Module]]) -> tuple[list[Target], dict[str, str]]:
    """Every target of ``model`` (tied tensors once) and the names of the tied duplicates -> the target kept."""
    found: list[Target] = []
    tied: dict[str, str] = {}
    first: dict[int, str] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, tuple(types)):
            continue
        for t in _module_weights(mname, module):
            p = get_tensor(model, t.name)
            if id(p) in first:  # the same tensor again (weight tying, a module used twice): one target
                if t.name != first[id(p)]:
                    tied[t.name] = first[id(p)]
                continue
            first[id(p)] = t.name
            found.append(t)
    return found, tied


def find_targets(
    model: nn.Module,
    include: Sequence[str | type] | None = None,
    exclude: Sequence[str | type] | None = None,
    types: Sequence[type[nn.Module]] = DEFAULT_TYPES,
    embeddings: bool = False,
) -> list[Target]:
    """Discover the prunable weight tensors of ``model`` in module order (a tied tensor once).

    ``include``/``exclude`` take parameter or module names (shell patterns such as ``"layer4.*"``)
    or module types. Biases and norm layers are never targets; embeddings only with ``embeddings=True``.
    """
    types = tuple(types) + (EMBEDDING_TYPES if embeddings else ())
    all_targets, _ = _all_targets(model, types)
    if not all_targets:
        raise NoPrunableTensorsError(
            f"{type(model).__name__} has no prunable tensors: pruneviz prunes the weights of "
            "Linear, Conv1d/2d/3d, ConvTranspose, RNN/LSTM/GRU and MultiheadAttention modules (and embeddings "
            "with embeddings=True), and found none. Pass types=... to add module types."
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


def excluded_parameters(model: nn.Module, targets: Sequence[Target], *, embeddings: bool = False,
                        types: Sequence[type[nn.Module]] = DEFAULT_TYPES) -> dict[str, str]:
    """Every parameter of ``model`` that is not one of ``targets``, with the reason (tied copies included)."""
    names = {t.name for t in targets}
    candidates, tied = _all_targets(model, tuple(types) + EMBEDDING_TYPES)
    candidate_names = {t.name for t in candidates}
    owner = {n: type(model.get_submodule(n.rpartition(".")[0]) if "." in n else model).__name__
             for n, _ in model.named_parameters()}
    out: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if n in names:
            continue
        kind = owner.get(n, "")
        leaf = n.rpartition(".")[2]
        if n in tied:
            out[n] = f"the same tensor as {tied[n]} (tied): pruned once, as {tied[n]}"
        elif n in candidate_names and kind in {t.__name__ for t in EMBEDDING_TYPES} and not embeddings:
            out[n] = "embedding: opt in with embeddings=True (usually the most sensitive tensor)"
        elif n in candidate_names:
            out[n] = "left out by include=/exclude="
        elif "norm" in kind.lower():
            out[n] = f"{kind} scale/shift: never pruned (structured scope zeroes them with their channel)"
        elif p.dim() < 2 and "bias" in leaf:
            out[n] = "bias: never pruned (a few values, each one feeds a whole channel)"
        elif p.dim() < 2:
            out[n] = "a 1-D parameter (scales, gates, tokens): not a weight matrix"
        elif any(w in leaf.lower() for w in ("token", "pos", "position")):
            out[n] = "a learned token or position embedding: not a weight matrix"
        else:
            out[n] = (f"a parameter of {kind or 'the model itself'} (a module type pruneviz does not prune): "
                      "pass types=... to prune it")
    return out


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


def get_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter (or buffer) called ``name`` in ``model``."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return getattr(module, attr)
