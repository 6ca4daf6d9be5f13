"""Units beyond conv channels removed for real: RNN hidden units and embedding dimensions, and the inputs of
the layers that read them (used by :func:`pruneviz.core.removal.slim`).

torch-pruning cannot do this (its LSTM pruning raises IndexError, GRU is unsupported, an embedding dimension is
not an output channel), so a *producer* (an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` whose hidden units the session
pruned, or an ``nn.Embedding``/``nn.EmbeddingBag`` whose dimensions it pruned) is handled here:

* *who reads it*: one forward pass with autograd on, where every module holding parameters or buffers outputs
  a fresh leaf tensor; a layer whose input depends on the producer's leaf reads it through parameter-free ops
  only (pooling over time, concatenation, masking, dropout, slicing). Each such layer must be an ``nn.Linear``
  or a recurrent module whose input features are the producer's features repeated k times (``cat([mean(h),
  max(h)])`` is k = 2), checked with two backward passes (removed columns depend only on removed features, kept
  columns only on kept ones);
* anything else (a LayerNorm, attention, a convolution, the model's output, an RNN's final state ``h_n``, a
  tied weight) keeps the units, with the reason in words;
* after the swap the outputs must equal the masked model's on the example input; otherwise the old modules go
  back and the units are kept.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import PrunevizError
from .recurrent_removal import output_keep, remove_hidden_units, shrink_linear_inputs, shrink_rnn_inputs
from .removal_rules import compare, max_abs

RNN_TYPES = (nn.LSTM, nn.GRU, nn.RNN)
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)
_PARAM = re.compile(r"weight_(ih|hh)_l(\d+)(_reverse)?$")


class UnitRemovalError(PrunevizError):
    """Units that cannot be removed (the reason is shown with the layer in ``SlimResult.kept``)."""


@dataclass
class UnitPlan:
    """What to remove from one producer module: ``keep`` per (layer, direction) for an RNN, one mask for an
    embedding; ``names`` are the session's tensor names reported in ``removed``/``kept``."""

    module: str
    names: list[str]
    keep: dict[tuple[int, int], torch.Tensor] | torch.Tensor

    @property
    def pruned(self) -> int:
        masks = self.keep.values() if isinstance(self.keep, dict) else [self.keep]
        return max(int((~m).sum()) for m in masks)


def is_unit_module(module: nn.Module) -> bool:
    return type(module) in RNN_TYPES or isinstance(module, EMBEDDING_TYPES)


def plan_units(session: Any, model: nn.Module) -> tuple[dict[str, UnitPlan], list[tuple[str, str, int]]]:
    """The session's structured choices for its RNN and embedding targets: (plans by module, refusals as
    (name, reason, units))."""
    plans: dict[str, UnitPlan] = {}
    refused: list[tuple[str, str, int]] = []
    by_module: dict[str, list[Any]] = {}
    for t in session.targets:
        if is_unit_module(model.get_submodule(t.module_name)):
            by_module.setdefault(t.module_name, []).append(t)
    for mname, targets in by_module.items():
        masks = {t.name: session.channel_mask(t.name) for t in targets}
        pruned = {n: m for n, m in masks.items() if m is not None and not bool(m.all())}
        if not pruned:
            continue
        names = list(pruned)
        module = model.get_submodule(mname)
        if isinstance(module, EMBEDDING_TYPES):
            plans[mname] = UnitPlan(mname, names, next(iter(pruned.values())).clone())
            continue
        keep: dict[tuple[int, int], torch.Tensor] = {}
        problem = None
        for t in targets:
            match = _PARAM.match(t.param_name)
            if match is None:
                problem = "an LSTM projection (proj_size > 0): a hidden unit is not one channel, so none is removed"
                break
            key = (int(match.group(2)), 1 if match.group(3) else 0)
            m = masks[t.name]
            m = torch.ones(t.channels, dtype=torch.bool) if m is None else m
            if key in keep and not torch.equal(keep[key], m):
                problem = f"weight_ih and weight_hh of layer {key[0]} prune different hidden units"
                break
            keep[key] = m.clone()
        if problem:
            refused += [(n, problem, int((~pruned[n]).sum())) for n in names]
        else:
            plans[mname] = UnitPlan(mname, names, keep)
    return plans, refused


# ------------------------------------------------------------------------------------------ module surgery
def shrink_embedding(emb: nn.Embedding | nn.EmbeddingBag, keep: torch.Tensor) -> nn.Module:
    """A new embedding with only the dimensions ``keep`` marks True (``emb`` is not changed)."""
    keep = torch.as_tensor(keep).bool().flatten().cpu()
    if keep.numel() != emb.embedding_dim or not keep.any():
        raise UnitRemovalError(f"the keep mask has {keep.numel()} entries ({int(keep.sum())} kept); it needs one per "
                               f"dimension ({emb.embedding_dim}) and at least one kept.")
    w = emb.weight
    kw = dict(padding_idx=emb.padding_idx, max_norm=emb.max_norm, norm_type=emb.norm_type,
              scale_grad_by_freq=emb.scale_grad_by_freq, sparse=emb.sparse, device=w.device, dtype=w.dtype)
    if isinstance(emb, nn.EmbeddingBag):
        kw.update(mode=emb.mode, include_last_offset=emb.include_last_offset)
    new = type(emb)(emb.num_embeddings, int(keep.sum()), **kw)
    with torch.no_grad():
        new.weight.copy_(w[:, keep.to(w.device)])
    return new.train(emb.training)


def _shrunk_producer(module: nn.Module, keep: Any) -> nn.Module:
    if isinstance(module, EMBEDDING_TYPES):
        return shrink_embedding(module, keep)
    return remove_hidden_units(module, keep)


def _features_keep(module: nn.Module, keep: Any) -> torch.Tensor:
    return keep if isinstance(module, EMBEDDING_TYPES) else output_keep(module, keep)


def _shrunk_reader(module: nn.Module, cols: torch.Tensor) -> nn.Module:
    if isinstance(module, nn.Linear):
        return shrink_linear_inputs(module, cols)
    return shrink_rnn_inputs(module, cols)


def _reader_fn(module: nn.Module) -> str:
    return "shrink_linear_inputs" if isinstance(module, nn.Linear) else "shrink_rnn_inputs"


# ------------------------------------------------------------------------------------------ who reads it
def _holds_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))


def _leaves(out: Any, found: list[torch.Tensor]) -> Any:
    """``out`` with each floating tensor replaced by a fresh leaf requiring grad (collected in ``found``)."""
    if isinstance(out, torch.Tensor):
        if not out.is_floating_point():
            return out
        leaf = out.detach().requires_grad_(True)
        found.append(leaf)
        return leaf
    if isinstance(out, tuple) and type(out) is tuple:
        return tuple(_leaves(o, found) for o in out)
    if isinstance(out, list):
        return [_leaves(o, found) for o in out]
    return out


def _tensor_list(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensor_list(o)]
    return []


def _depends(t: torch.Tensor | None, leaf: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor | None:
    """The gradient of ``sum(weight * t)`` with respect to ``leaf`` (None when ``t`` does not depend on it)."""
    if t is None or not t.requires_grad:
        return None
    r = torch.rand(t.shape, generator=torch.Generator().manual_seed(0), dtype=t.dtype) + 0.5
    if weight is not None:
        r = r * weight.to(t.dtype)
    (g,) = torch.autograd.grad(t, [leaf], grad_outputs=r, allow_unused=True, retain_graph=True)
    return g


def _readers(model: nn.Module, x: Any, forward_fn: Callable, producer: str, fkeep: torch.Tensor
             ) -> tuple[list[tuple[str, nn.Module, torch.Tensor]], str | None]:
    """The layers that read ``producer``'s output features (name, module, keep mask of their input features), or
    the reason they cannot all shrink."""
    calls: Counter[str] = Counter()
    inputs: list[tuple[str, nn.Module, Any]] = []
    feature: list[torch.Tensor] = []
    side: list[torch.Tensor] = []
    hooks = []
    for name, m in model.named_modules():
        if not _holds_state(m):
            continue

        def pre(mod, args, name=name):
            calls[name] += 1
            inputs.append((name, mod, args[0] if args and isinstance(args[0], torch.Tensor) else None))

        def post(mod, args, out, name=name):
            if name != producer:
                return _leaves(out, [])
            first, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
            if not isinstance(first, torch.Tensor):
                return None
            found: list[torch.Tensor] = []
            lead = _leaves(first, found)
            feature.extend(found)
            return (lead, *_leaves(rest, side)) if isinstance(out, tuple) else lead

        hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            out = forward_fn(model, x)
    finally:
        for h in hooks:
            h.remove()
    if calls[producer] != 1 or len(feature) != 1:
        return [], ("it runs more than once per forward pass (or returns a PackedSequence), so pruneviz cannot follow "
                    "its outputs")
    leaf = feature[0]
    if leaf.shape[-1] != fkeep.numel():
        return [], "its output features are not on the last dimension"
    for t in _tensor_list(out):
        if _depends(t, leaf) is not None:
            return [], "its outputs reach the model's output directly (removing units would change its shape)"
    for s in side:
        if any(_depends(t, s) is not None for _, _, t in inputs) or any(_depends(t, s) is not None
                                                                      for t in _tensor_list(out)):
            return [], "its final hidden state (h_n) is used, and pruneviz only follows the output sequence"
    readers = []
    for name, mod, t in inputs:
        if name == producer or _depends(t, leaf) is None:
            continue
        label = f"{type(mod).__name__} {name}"
        if type(mod) not in (nn.Linear, *RNN_TYPES):
            return [], f"its outputs reach {label}, which pruneviz cannot shrink (only a Linear or an RNN reading them)"
        if calls[name] != 1:
            return [], f"{label}, which reads its outputs, runs more than once per forward pass"
        n_in = mod.in_features if isinstance(mod, nn.Linear) else mod.input_size
        if t.shape[-1] != n_in or n_in % fkeep.numel():
            return [], f"{label} reads its outputs mixed with other features (e.g. after a reshape)"
        cols = fkeep.repeat(n_in // fkeep.numel())
        g_gone, g_kept = _depends(t, leaf, ~cols), _depends(t, leaf, cols)
        if (g_gone is not None and bool(g_gone[..., fkeep].ne(0).any())) or (
                g_kept is not None and bool(g_kept[..., ~fkeep].ne(0).any())):
            return [], f"{label} reads its outputs mixed with other features (e.g. after a reshape)"
        readers.append((name, mod, cols))
    return readers, None


def _tied(model: nn.Module, module: nn.Module) -> str | None:
    owners: dict[int, list[str]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), []).append(mname)
    for p in module.parameters(recurse=False):
        if len(set(owners.get(id(p), []))) > 1:
            return f"its weight is tied to {', '.join(sorted(set(owners[id(p)]))[:3])}: removing units would untie it"
    return None


# ------------------------------------------------------------------------------------------ removal
def remove_units(model: nn.Module, plans: dict[str, UnitPlan], x: Any, forward_fn: Callable, ref: Any,
                 tolerance: float) -> tuple[dict[str, int], list[tuple[str, str, int]], list[dict]]:
    """Remove each plan's units from ``model`` in place (modules are swapped), checking the outputs against ``ref``
    after each producer: (removed units by session name, refusals (name, reason, units), history steps)."""
    removed: dict[str, int] = {}
    refused: list[tuple[str, str, int]] = []
    history: list[dict] = []
    limit = tolerance * max(1.0, max_abs(ref))
    for mname, plan in plans.items():
        module = model.get_submodule(mname)
        try:
            reason = _tied(model, module)
            fkeep = _features_keep(module, plan.keep)
            readers, reason = ([], reason) if reason else _readers(model, x, forward_fn, mname, fkeep)
            new = None if reason else _shrunk_producer(module, plan.keep)
            swaps = [] if reason else [(mname, module, new)] + [(n, m, _shrunk_reader(m, c)) for n, m, c in readers]
        except PrunevizError as e:
            reason, swaps = str(e).rstrip("."), []
        if not reason:
            for n, _, m in swaps:
                model.set_submodule(n, m)
            diff, _ = compare(model, x, forward_fn, ref)
            if diff > limit:
                for n, old, _ in swaps:
                    model.set_submodule(n, old)
                reason = (f"removing its units changed the outputs by {diff:.3g} (something reads them that pruneviz "
                          "could not follow)")
        if reason:
            refused += [(n, reason, plan.pruned) for n in plan.names]
            continue
        for n in plan.names:
            removed[n] = plan.pruned
        history.append(_producer_step(mname, module, plan.keep))
        history += [{"module": n, "fn": _reader_fn(m), "keep": _indices(c)} for n, m, c in readers]
    return removed, refused, history


def _indices(mask: torch.Tensor) -> list[int]:
    return [int(i) for i in mask.nonzero().flatten()]


def _producer_step(mname: str, module: nn.Module, keep: Any) -> dict:
    if isinstance(module, EMBEDDING_TYPES):
        return {"module": mname, "fn": "shrink_embedding", "keep": _indices(keep)}
    return {"module": mname, "fn": "remove_hidden_units", "keep": [[layer, d, _indices(m)] for (layer, d), m in
                                                                   sorted(keep.items())]}


UNIT_STEPS = ("shrink_embedding", "remove_hidden_units", "shrink_linear_inputs", "shrink_rnn_inputs")


def replay_unit_step(model: nn.Module, step: dict) -> None:
    """Apply one recorded unit step (see :data:`UNIT_STEPS`) to a freshly built ``model``, in place."""
    name, fn = step["module"], step["fn"]
    module = model.get_submodule(name)

    def mask(n: int, idx: list[int]) -> torch.Tensor:
        m = torch.zeros(n, dtype=torch.bool)
        m[[int(i) for i in idx]] = True
        return m

    if fn == "remove_hidden_units":
        keep = {(int(layer), int(d)): mask(module.hidden_size, idx) for layer, d, idx in step["keep"]}
        new = remove_hidden_units(module, keep)
    elif fn == "shrink_embedding":
        new = shrink_embedding(module, mask(module.embedding_dim, step["keep"]))
    elif fn == "shrink_linear_inputs":
        new = shrink_linear_inputs(module, mask(module.in_features, step["keep"]))
    else:
        new = shrink_rnn_inputs(module, mask(module.input_size, step["keep"]))
    model.set_submodule(name, new)
