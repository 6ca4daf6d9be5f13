"""Hidden-unit removal for ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (torch-pruning's LSTM pruning raises IndexError
and it does not support GRU), standalone and exact.

*Keep masks.* ``keep`` says which hidden units stay: a bool tensor of length ``hidden_size`` per layer
(``{layer_index: mask}``), per layer and direction (``{(layer_index, 0 or 1): mask}``, 1 = the reverse
direction), or one mask for every layer. ``keep[l][h] == False`` removes hidden unit ``h`` of layer ``l`` (in
both directions, unless a direction has its own mask): its rows in every gate of ``weight_ih_l{l}``,
``weight_hh_l{l}``, ``bias_ih_l{l}``, ``bias_hh_l{l}`` (``*_reverse`` for the reverse direction), its column
of ``weight_hh_l{l}``, and its input column of layer ``l + 1`` (whose input is ``[forward h, backward h]`` when
bidirectional). A recurrent module has one ``hidden_size``, so every layer and direction must keep the same
number of units.

*Why it is exact.* :func:`zero_hidden_units` is the matching masked model: zero rows and biases make the unit's
gates constant (LSTM: i = f = o = 0.5, g = 0; GRU: r = z = 0.5, n = 0; RNN: tanh/relu(0) = 0), so from a zero
initial state its hidden (and cell) state stays 0 and feeds nothing. Removing it leaves every other unit and
the outputs unchanged. With nonzero initial states ``h0``/``c0``, drop the removed units from them too.

The module that consumes the RNN's output loses the matching input columns:
``shrink_linear_inputs(head, output_keep(rnn, keep))`` (``shrink_rnn_inputs`` for a recurrent one).
:func:`pruneviz.core.removal.slim` does all this for the session's structured choices
(:mod:`pruneviz.core.removal_units`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .errors import PrunevizError

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}

KeepSpec = Mapping[int, torch.Tensor] | Mapping[tuple[int, int], torch.Tensor] | torch.Tensor


class RecurrentRemovalError(PrunevizError):
    """Hidden units that cannot be removed as asked."""


def _gates(rnn: nn.Module) -> int:
    for cls, n in _GATES.items():
        if type(rnn) is cls:
            return n
    raise RecurrentRemovalError(
        f"{type(rnn).__name__} is not an nn.LSTM, nn.GRU or nn.RNN; hidden-unit removal supports only those."
    )


def _masks(rnn: nn.Module, keep: KeepSpec) -> list[list[torch.Tensor]]:
    """One keep mask per layer and direction: ``masks[layer][direction]``."""
    if getattr(rnn, "proj_size", 0):
        raise RecurrentRemovalError(
            f"this LSTM has proj_size={rnn.proj_size}: its hidden state is projected, so a hidden unit is not a "
            "single channel. Hidden-unit removal supports proj_size=0 only."
        )
    dirs = 2 if rnn.bidirectional else 1
    if isinstance(keep, torch.Tensor):
        keep = dict.fromkeys(range(rnn.num_layers), keep)
    out = []
    for layer in range(rnn.num_layers):
        row = []
        for d in range(dirs):
            m = keep.get((layer, d), keep.get(layer))
            m = torch.ones(rnn.hidden_size, dtype=torch.bool) if m is None else torch.as_tensor(m).bool().flatten()
            if m.numel() != rnn.hidden_size:
                raise RecurrentRemovalError(
                    f"keep mask for layer {layer} has {m.numel()} entries; it needs one per hidden unit "
                    f"(hidden_size={rnn.hidden_size})."
                )
            row.append(m.cpu())
        out.append(row)
    counts = {int(m.sum()) for row in out for m in row}
    if len(counts) > 1:
        raise RecurrentRemovalError(
            f"the layers would keep different numbers of hidden units ({sorted(counts)}), but a "
            f"{type(rnn).__name__} has one hidden_size for all layers and directions: keep the same number in "
            "every layer."
        )
    if counts == {0}:
        raise RecurrentRemovalError("every hidden unit would be removed; keep at least one per layer.")
    return out


def _rows(mask: torch.Tensor, gates: int) -> torch.Tensor:
    return mask.repeat(gates)  # gate blocks are stacked: [gate0 units, gate1 units, ...]


def _suffixes(rnn: nn.Module) -> list[str]:
    return ["", "_reverse"] if rnn.bidirectional else [""]


def _layer_cols(masks: list[list[torch.Tensor]], layer: int) -> torch.Tensor:
    """Which features of layer ``layer``'s output (``[forward h, backward h]``) stay."""
    return torch.cat(masks[layer])


def output_keep(rnn: nn.Module, keep: KeepSpec) -> torch.Tensor:
    """Which features of the RNN's output (last dim: ``[forward h, backward h]``) stay after removal."""
    return _layer_cols(_masks(rnn, keep), rnn.num_layers - 1)


def zero_hidden_units(rnn: nn.Module, keep: KeepSpec) -> nn.Module:
    """The masked counterpart, in place: zero the removed units' gate rows and biases (see the module notes)."""
    gates, masks = _gates(rnn), _masks(rnn, keep)
    with torch.no_grad():
        for layer, row in enumerate(masks):
            for sfx, m in zip(_suffixes(rnn), row, strict=True):
                rows = _rows(m, gates)
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    p = getattr(rnn, f"{kind}_l{layer}{sfx}", None)
                    if p is not None:
                        p[~rows] = 0
    return rnn


def remove_hidden_units(rnn: nn.LSTM | nn.GRU | nn.RNN, keep: KeepSpec) -> nn.Module:
    """A new, smaller module of the same type with the hidden units ``keep`` marks False removed.

    ``rnn`` is not changed. Refuses ``proj_size > 0`` and masks that keep different counts per layer.
    """
    gates, masks = _gates(rnn), _masks(rnn, keep)
    new = _like(rnn, hidden_size=int(masks[0][0].sum()))
    with torch.no_grad():
        for layer, row in enumerate(masks):
            cols_in = None if layer == 0 else _layer_cols(masks, layer - 1)
            for sfx, m in zip(_suffixes(rnn), row, strict=True):
                rows = _rows(m, gates)
                w_ih = getattr(rnn, f"weight_ih_l{layer}{sfx}")[rows]
                getattr(new, f"weight_ih_l{layer}{sfx}").copy_(w_ih if cols_in is None else w_ih[:, cols_in])
                getattr(new, f"weight_hh_l{layer}{sfx}").copy_(getattr(rnn, f"weight_hh_l{layer}{sfx}")[rows][:, m])
                if rnn.bias:
                    for kind in ("bias_ih", "bias_hh"):
                        getattr(new, f"{kind}_l{layer}{sfx}").copy_(getattr(rnn, f"{kind}_l{layer}{sfx}")[rows])
    return new.train(rnn.training)


def _like(rnn: nn.Module, **changes: int) -> nn.Module:
    """A new recurrent module configured as ``rnn`` but for ``changes`` (input_size, hidden_size)."""
    kwargs = {"input_size": rnn.input_size, "hidden_size": rnn.hidden_size, "num_layers": rnn.num_layers,
              "bias": rnn.bias, "batch_first": rnn.batch_first, "dropout": rnn.dropout,
              "bidirectional": rnn.bidirectional, **changes}
    if type(rnn) is nn.RNN:
        kwargs["nonlinearity"] = rnn.nonlinearity
    ref = rnn.weight_ih_l0
    return type(rnn)(**kwargs, device=ref.device, dtype=ref.dtype)


def shrink_rnn_inputs(rnn: nn.LSTM | nn.GRU | nn.RNN, keep_cols: torch.Tensor) -> nn.Module:
    """A new recurrent module of the same type reading only the input features ``keep_cols`` marks True (the
    first layer's ``weight_ih`` columns, both directions); ``rnn`` is not changed."""
    _gates(rnn)
    _masks(rnn, torch.ones(rnn.hidden_size, dtype=torch.bool))  # refuses proj_size
    keep_cols = torch.as_tensor(keep_cols).bool().flatten().cpu()
    if keep_cols.numel() != rnn.input_size or not keep_cols.any():
        raise RecurrentRemovalError(
            f"keep_cols has {keep_cols.numel()} entries ({int(keep_cols.sum())} kept); it needs one per input "
            f"feature ({rnn.input_size}) and at least one kept."
        )
    new = _like(rnn, input_size=int(keep_cols.sum()))
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            src = p[:, keep_cols.to(p.device)] if name in ("weight_ih_l0", "weight_ih_l0_reverse") else p
            getattr(new, name).copy_(src)
    return new.train(rnn.training)


def shrink_linear_inputs(linear: nn.Linear, keep_cols: torch.Tensor) -> nn.Linear:
    """A new ``nn.Linear`` reading only the input features ``keep_cols`` marks True (``linear`` is not changed)."""
    keep_cols = torch.as_tensor(keep_cols).bool().flatten().cpu()
    if not isinstance(linear, nn.Linear):
        raise RecurrentRemovalError(f"shrink_linear_inputs needs an nn.Linear, got {type(linear).__name__}.")
    if keep_cols.numel() != linear.in_features or not keep_cols.any():
        raise RecurrentRemovalError(
            f"keep_cols has {keep_cols.numel()} entries ({int(keep_cols.sum())} kept); it needs one per input "
            f"feature ({linear.in_features}) and at least one kept."
        )
    w = linear.weight
    new = nn.Linear(int(keep_cols.sum()), linear.out_features, bias=linear.bias is not None,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w[:, keep_cols.to(w.device)])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.train(linear.training)
