"""When may a torch-pruning group's channels go? The rules :mod:`pruneviz.core.removal` applies, group by group.

A channel is removed only if the masked model provably carries zeros in it wherever it is read, so removing
it leaves every output as it was. Each rule that refuses a channel says why, in words for the user.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch_pruning import ops

from .errors import PrunevizError
from .removal_graph import ExampleInputError, ForwardFn

PASS_THROUGH = {ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT, ops.OPTYPE.RESHAPE, ops.OPTYPE.UNBIND,
                ops.OPTYPE.EXPAND, ops.OPTYPE.SLICE, ops.OPTYPE.PRELU}
CHANNEL_TYPES = {ops.OPTYPE.CONV, ops.OPTYPE.DEPTHWISE_CONV, ops.OPTYPE.LINEAR, ops.OPTYPE.BN}

# why a channel stays, most telling first: (kind, template); {names} lists the layers involved
_REASONS = {
    "fenced": "{names}",
    "output": "its channels reach the model's output directly",
    "norm": "reaches {names}, which normalises across channels: removing channels would change its output",
    "param": "coupled to the free parameter {names}, which pruneviz does not zero with the channels",
    "other": "reaches {names}, whose channels pruneviz does not remove",
    "inorm": "passes through {names}, whose shift is not zeroed with the channels",
    "writer": ("coupled to {names} (by a residual add, a multiplication or a depthwise convolution), which keeps "
               "channels this layer prunes: only channels that every coupled layer prunes can go"),
    "bn": ("passes through BatchNorm {names}, which is not zeroed with these channels (a BatchNorm of zeros "
           "outputs its shift, not 0)"),
    "reader": ("reaches {names} as nonzero values in the masked model (e.g. through an activation with "
               "f(0) != 0 such as a sigmoid)"),
}
_PRIORITY = {k: i for i, k in enumerate(_REASONS)}


def _names(labels: set[str], most: int = 3) -> str:
    ordered = sorted(labels)
    more = f" and {len(ordered) - most} more" if len(ordered) > most else ""
    return ", ".join(ordered[:most]) + more


def alive_key(graph: tp.DependencyGraph, dep: Any, alive: dict) -> tuple[nn.Module, str] | None:
    """The key of the list of original channel indices still present that this group item changes.

    ``alive[(module, "out")]`` is a layer's output (or BatchNorm/depthwise) channels, ``(module, "in")`` a
    Conv/Linear's input channels; each list starts full when first seen.
    """
    node = dep.target
    if node.type not in CHANNEL_TYPES or not isinstance(node.module, nn.Module):
        return None
    space = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
    key = (node.module, space)
    if key not in alive:
        n = graph.get_out_channels(node.module) if space == "out" else graph.get_in_channels(node.module)
        alive[key] = list(range(n))
    return key


def removable(graph, group, by_module: dict, bn_owner: dict, in_stats: dict, fenced: dict, alive: dict,
              names: dict, why: Counter) -> list[int]:
    """The root positions of ``group`` whose removal leaves the outputs unchanged; the others are counted in
    ``why`` under the reason of the most telling rule they break.

    ``by_module``: pruned layer -> plan (``.keep`` per original channel, ``.name``); ``bn_owner``: BatchNorm ->
    the plan that zeroes it; ``in_stats``: Conv/Linear -> max |input| per original input channel in the masked
    model; ``fenced``: graph nodes torch-pruning cannot map through.
    """
    blocked: dict[int, tuple[str, str]] = {}

    def block(roots: Iterable[int], kind: str, label: str = "") -> None:
        for r in roots:
            old = blocked.get(r)
            if old is None or _PRIORITY[kind] < _PRIORITY[old[0]]:
                blocked[r] = (kind, label)

    for item in group:
        dep, idxs, roots = item.dep, item.idxs, item.root_idxs
        node = dep.target
        m, typ = node.module, node.type
        label = (names.get(m) if isinstance(m, nn.Module) else None) or node.name
        if node in fenced:
            block(roots, "fenced", fenced[node])
        elif typ in PASS_THROUGH:
            continue
        elif typ == ops.OPTYPE.PARAMETER:
            block(roots, "param", graph._param_to_name.get(m, "?"))
        elif typ == ops.OPTYPE.OUTPUT:
            block(roots, "output")
        elif typ in (ops.OPTYPE.LN, ops.OPTYPE.GN):
            block(roots, "norm", f"{type(m).__name__} {label}")
        elif typ == ops.OPTYPE.IN:
            if getattr(m, "affine", False):
                block(roots, "inorm", f"{type(m).__name__} {label}")
        elif typ not in CHANNEL_TYPES:
            block(roots, "other", f"{type(m).__name__} {label}")
        else:
            key = alive_key(graph, dep, alive)
            cur = alive[key]
            pairs = list(zip(idxs, roots, strict=True))
            if typ == ops.OPTYPE.BN:  # must be the BatchNorm the session zeroed with these channels
                owner = bn_owner.get(m)
                block([r for i, r in pairs if owner is None or owner.keep[cur[i]]], "bn", label)
            elif key[1] == "out":  # a layer that writes these channels must prune them too
                plan = by_module.get(m)
                block([r for i, r in pairs if plan is None or plan.keep[cur[i]]], "writer",
                      plan.name if plan else label)
            else:  # a layer that reads them must see zeros
                s = in_stats.get(m)
                block([r for i, r in pairs if s is None or cur[i] >= len(s) or s[cur[i]] != 0], "reader", label)
    roots = list(group[0].idxs)
    per_kind: dict[str, tuple[set[str], int]] = {}
    for r in roots:
        if r in blocked:
            kind, label = blocked[r]
            labels, n = per_kind.get(kind, (set(), 0))
            per_kind[kind] = (labels | ({label} if label else set()), n + 1)
    for kind, (labels, n) in sorted(per_kind.items(), key=lambda kv: _PRIORITY[kv[0]]):
        why[_REASONS[kind].format(names=_names(labels))] += n
    return sorted(set(roots) - set(blocked))


def whole_group_problem(graph: tp.DependencyGraph, group: Any, names: dict) -> str | None:
    """Why ``group`` cannot be removed at all (grouped convolutions, layers left empty), or None."""
    for dep, idxs in group:
        m = dep.target.module
        if not (isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1):
            continue
        label = names.get(m, "?")
        if ops.module2type(m) == ops.OPTYPE.DEPTHWISE_CONV:
            if m.in_channels != m.out_channels:
                return f"depthwise convolution {label} has a channel multiplier, which torch-pruning cannot shrink"
            continue
        n = m.out_channels if graph.is_out_channel_pruning_fn(dep.handler) else m.in_channels
        size = n // m.groups
        pos: list[set[int]] = [set() for _ in range(m.groups)]
        for i in idxs:
            pos[i // size].add(i % size)
        if any(p != pos[0] for p in pos):
            return (f"grouped convolution {label} ({m.groups} groups): the channels to remove sit at different "
                    "positions in each group, and torch-pruning would silently compute wrong outputs")
    if not graph.check_pruning_group(group):
        return "removing them would leave a coupled layer with no channels at all"
    return None


def unsupported(module: nn.Module, keep: torch.Tensor, is_output: bool) -> str | None:
    """Why a pruned Conv/Linear-style layer cannot lose its channels at all (before any graph work), or None."""
    if is_output:
        return "the output layer: removing its channels would change the shape of the model's output."
    if isinstance(module, nn.MultiheadAttention):
        return ("attention heads cannot be removed from a stock nn.MultiheadAttention: it ties the head width to "
                "embed_dim (embed_dim = num_heads x head_dim, which out_proj and the residual stream share), so the "
                "pruned heads stay, zero, as in the masked model.")
    if isinstance(module, nn.RNNBase):
        return (f"{type(module).__name__} is not a plain nn.LSTM, nn.GRU or nn.RNN: its hidden units are not "
                "removed physically.")
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return f"{type(module).__name__} layers are not removed physically (only Conv and Linear are)."
    if not keep.any():
        return "every channel is pruned: removing them all would cut the network in two (layer collapse)."
    return None


def tp_failure(e: Exception) -> str:
    """Why torch-pruning could not group a layer, in words."""
    import traceback

    where = {f.f_code.co_filename.rsplit("/", 1)[-1] for f, _ in traceback.walk_tb(e.__traceback__)}
    if "index_mapping.py" in where:
        return (f"torch-pruning cannot follow its channels through the reshape, split or recurrent layer after it "
                f"({type(e).__name__}: {str(e)[:120]})")
    return f"torch-pruning failed on this layer ({type(e).__name__}: {str(e)[:160]})"


# ---------------------------------------------------------------- evidence from forward passes
def _record(stats: dict, name: str, module: nn.Module, args: tuple) -> None:
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.numel() == 0:
        return
    x = x.detach().abs()
    if isinstance(module, nn.Linear):
        v = x.reshape(-1, x.shape[-1]).amax(0)
    else:
        cdim = 1 if x.dim() == module.weight.dim() else 0
        v = x.transpose(0, cdim).reshape(x.shape[cdim], -1).amax(1)
    prev = stats.get(name)
    stats[name] = v if prev is None or prev.shape != v.shape else torch.maximum(prev, v)


def run(model: nn.Module, x: Any, forward_fn: ForwardFn, stats: dict | None = None,
        first: bool = False) -> tuple[Any, int]:
    """(output, FLOPs) of one forward pass; ``stats`` collects each Conv/Linear's per-input-channel max |x|.

    The ``first`` run checks that the example input fits: any error becomes an :class:`ExampleInputError`.
    """
    hooks = []
    if stats is not None:
        for name, m in model.named_modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                hooks.append(m.register_forward_pre_hook(lambda mod, a, n=name: _record(stats, n, mod, a)))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = forward_fn(model, x)
    except PrunevizError:
        raise
    except Exception as e:
        if not first:
            raise
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ExampleInputError(
            f"the example input (shape {shape}) does not fit {type(model).__name__}: {type(e).__name__}: "
            f"{str(e)[:300]}. Pass one batch shaped like the model's inputs (e.g. x[:1] of the data you "
            "evaluate on); for dict or tuple inputs pass forward_fn=lambda model, x: model(**x)."
        ) from None
    finally:
        for h in hooks:
            h.remove()
    return out, int(counter.get_total_flops())


def compare(model: nn.Module, x: Any, forward_fn: ForwardFn, ref: Any) -> tuple[float, int]:
    """(max abs difference from ``ref``, FLOPs) of the slim model; a model that fails to run differs by inf."""
    try:
        out, flops = run(model, x, forward_fn)
    except Exception:  # noqa: BLE001 - a mis-traced removal can break the forward
        return float("inf"), 0
    return max_abs_diff(ref, out), flops


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def max_abs(out: Any) -> float:
    return max((float(t.detach().abs().max()) for t in _tensors(out) if t.numel()), default=0.0)


def max_abs_diff(a: Any, b: Any) -> float:
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb) or any(u.shape != v.shape for u, v in zip(ta, tb, strict=True)):
        return float("inf")
    return max((float((u.double() - v.double()).abs().max()) for u, v in zip(ta, tb, strict=True) if u.numel()),
               default=0.0)
