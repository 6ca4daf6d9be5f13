"""The physically smaller model: structurally pruned output channels removed for real, outputs unchanged.

``slim(session, x)`` deep-copies the session's (masked) model and removes every output channel the session
pruned, with the session's own channel choices, together with everything coupled to it (the next layer's
input channels, BatchNorm, residual adds, concatenations, depthwise convolutions), using torch-pruning's
``DependencyGraph`` one pruned layer at a time. A channel goes only when removing it provably leaves the
outputs as they are in the masked model; otherwise it is kept (still zero, as in the masked model) and the
layer is listed in ``SlimResult.kept`` with the reason in plain words. RNN hidden units and embedding
dimensions pruned in structured scope go too, with the inputs of the Linear or RNN that reads them
(:mod:`pruneviz.core.removal_units`); attention heads stay (a stock ``nn.MultiheadAttention`` ties the head
width to ``embed_dim``). A channel is removed when, in its torch-pruning group,

* every layer that writes the channel (convolutions and linears, through residual adds, multiplications
  and depthwise convolutions) prunes it: the session zeroed its weights, bias and BatchNorm scale and shift,
* every BatchNorm on the way is one the session zeroed with it (a BatchNorm of zeros outputs its shift),
* no LayerNorm/GroupNorm, attention, embedding, free parameter or the model's output is reached, and no
  reshape torch-pruning cannot map (ShuffleNetV2's channel shuffle) is crossed,
* the layers that read it see exact zeros in the masked model on the example input (this catches an
  activation with f(0) != 0 such as a sigmoid),
* a grouped convolution loses the same positions in every group (torch-pruning silently computes wrong
  outputs otherwise), and no layer is left without channels.

FLOPs here are counted with ``torch.utils.flop_counter.FlopCounterMode`` (as ``stats.count_flops``); MACs
are half of them (FLOPs = 2 x MACs).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from .criteria import find_batchnorms
from .errors import PrunevizError, UnknownLayerError, suggest
from .removal_graph import (
    ExampleInputError,
    ForwardFn,
    LayerTooBig,
    RemovalError,
    TraceError,
    WorkGuard,
    WorkLimitError,
    WorkLimits,
    build_graph,
    coupled_groups,
    default_forward,
    graph_limit_error,
    replay,
)
from .removal_rules import (
    alive_key,
    compare,
    max_abs,
    removable,
    run,
    tp_failure,
    unsupported,
    whole_group_problem,
)
from .removal_units import UnitPlan, is_unit_module, plan_units, remove_units
from .targets import find_targets

__all__ = [
    "ExampleInputError", "KeptLayer", "RemovalError", "SlimResult", "TraceError", "WorkLimitError", "WorkLimits",
    "coupled_groups", "replay", "slim", "slim_model",
]

NO_STRUCTURE_NOTE = ("nothing to remove: removal needs structured scope (session.set_scope('structured')); "
                     "masks alone only zero weights, and the model keeps its size.")


@dataclass(frozen=True)
class KeptLayer:
    """A layer whose pruned channels (``channels`` of them) stay in the slim model, zero as in the masked model."""

    name: str
    reason: str
    channels: int = 0


@dataclass
class SlimResult:
    """The slim model and what happened.

    ``removed``/``kept`` are keyed by the session's layer (weight) names; a layer can be in both when only some of
    its pruned channels could go. ``history`` (plain data) replays the removal on a freshly built model
    (:func:`replay`). MACs come from ``FlopCounterMode`` on the example input (FLOPs = 2 x MACs).
    ``outputs_match``/``max_abs_diff`` compare with the masked model on the example input: equal when
    ``max_abs_diff <= tolerance * max(1, max |masked output|)``."""

    model: nn.Module
    removed: dict[str, int]
    kept: list[KeptLayer]
    history: list[dict]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    outputs_match: bool | None = None
    max_abs_diff: float | None = None
    note: str = ""
    input_spec: dict | None = None
    seconds: float = 0.0
    tolerance: float = 1e-5

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(self.macs_before, 1)

    @property
    def flops_before(self) -> int:
        return 2 * self.macs_before

    @property
    def flops_after(self) -> int:
        return 2 * self.macs_after

    @property
    def kept_names(self) -> list[str]:
        return [k.name for k in self.kept]


@dataclass(frozen=True)
class _Plan:
    name: str  # the layer's name for the user (the session's weight name)
    keep: torch.Tensor  # per output channel, True = kept
    bn: str | None  # the BatchNorm zeroed with the channels, if any


class _Restart(Exception):  # noqa: N818 - internal control flow
    def __init__(self, module: str, reason: str) -> None:
        super().__init__(reason)
        self.module, self.reason = module, reason


# ------------------------------------------------------------------------------------------------ public
def slim(session: Any, example_input: Any, *, forward_fn: ForwardFn | None = None, check: bool = True,
         limits: WorkLimits = WorkLimits(), tolerance: float = 1e-5) -> SlimResult:
    """A copy of ``session``'s model with its structurally pruned channels physically removed.

    ``example_input``: one batch the model accepts (one sample is enough); ``forward_fn(model, x)`` runs the
    model when its input is a dict or tuple (default ``model(x)``). ``check`` compares the outputs with the
    masked model's and, if torch-pruning mis-traced a coupling, removes again layer by layer, keeping the layer
    whose removal changes the outputs (``check=False``: no comparison, ``outputs_match`` is None).
    ``limits`` bounds torch-pruning's graph work (:class:`WorkLimits`); ``tolerance`` is relative to
    max(1, max |masked output|). The session and its model are never changed.
    """
    t0 = time.perf_counter()
    with torch.inference_mode(False):  # copies made in inference mode could not be traced with autograd
        return _slim_session(session, example_input, forward_fn, check, limits, tolerance, t0)


def _slim_session(session, example_input, forward_fn, check, limits, tolerance, t0) -> SlimResult:
    with session.lock:  # one consistent view of the weights and masks
        work = copy.deepcopy(session.model).eval()
        units, refused = plan_units(session, work)
        kept = [KeptLayer(n, why, k) for n, why, k in refused]
        plans = {}
        for t in session.targets:
            if is_unit_module(work.get_submodule(t.module_name)):
                continue
            keep = session.channel_mask(t.name)
            if keep is None or bool(keep.all()):
                continue
            bn = session.batchnorm_of(t.name)
            bn = bn if bn and f"{bn}.weight" in session.channel_tensors(t.name) else None
            reason = unsupported(work.get_submodule(t.module_name), keep, t.name == session.output_layer)
            if reason:
                kept.append(KeptLayer(t.name, reason, int((~keep).sum())))
            else:
                plans[t.module_name] = _Plan(t.name, keep.clone(), bn)
    return _slim(work, plans, kept, example_input, forward_fn, check, limits, tolerance, t0, units)


def slim_model(model: nn.Module, example_input: Any, remove: Mapping[str, Iterable[int]], *,
               forward_fn: ForwardFn | None = None, check: bool = True, limits: WorkLimits = WorkLimits(),
               tolerance: float = 1e-5) -> SlimResult:
    """Remove output channels ``remove[module_name]`` (indices; duplicates ignored) from a copy of ``model``.

    The reference ("masked") model is a copy with those channels zeroed: weight rows, bias, and the scale and
    shift of the BatchNorm right after (as the session does). ``model`` is not changed.
    """
    t0 = time.perf_counter()
    with torch.inference_mode(False):
        return _slim_model(model, example_input, remove, forward_fn, check, limits, tolerance, t0)


def _slim_model(model, example_input, remove, forward_fn, check, limits, tolerance, t0) -> SlimResult:
    work = copy.deepcopy(model).eval()
    targets = {t.module_name: t for t in find_targets(work)}
    bns = find_batchnorms(work, list(targets.values()))
    plans, kept = {}, []
    for mname, idxs in remove.items():
        t = targets.get(mname)
        if t is None:
            raise UnknownLayerError(f"{mname!r} is not a Conv/Linear module of {type(model).__name__}."
                                    + suggest(mname, targets))
        idx = sorted({int(i) for i in idxs})
        if idx and not 0 <= idx[0] <= idx[-1] < t.channels:
            raise RemovalError(f"channel indices for {mname!r} must be in [0, {t.channels}); got {idx[0]}..{idx[-1]}.")
        keep = torch.ones(t.channels, dtype=torch.bool)
        keep[idx] = False
        if keep.all():
            continue
        bn = bns.get(t.name)
        with torch.no_grad():
            shape = [1] * len(t.shape)
            shape[t.channel_dim] = t.channels
            w = work.get_submodule(mname).weight
            w.mul_(keep.view(shape).to(w.dtype))
            owners = [getattr(work.get_submodule(mname), "bias", None)]
            if bn and getattr(work.get_submodule(bn), "affine", False):
                owners += [work.get_submodule(bn).weight, work.get_submodule(bn).bias]
            for p in owners:
                if isinstance(p, torch.Tensor) and p.shape == keep.shape:
                    p.mul_(keep.to(p.dtype))
        reason = unsupported(work.get_submodule(mname), keep, False)
        if reason:
            kept.append(KeptLayer(t.name, reason, len(idx)))
        else:
            plans[mname] = _Plan(t.name, keep, bn if bn and getattr(work.get_submodule(bn), "affine", False) else None)
    return _slim(work, plans, kept, example_input, forward_fn, check, limits, tolerance, t0)


# ------------------------------------------------------------------------------------------------ core
def _slim(work: nn.Module, plans: dict[str, _Plan], kept: list[KeptLayer], x: Any, forward_fn: ForwardFn | None,
          check: bool, limits: WorkLimits, tolerance: float, t0: float,
          units: dict[str, UnitPlan] | None = None) -> SlimResult:
    forward_fn = forward_fn or default_forward
    units = units or {}
    stats: dict[str, torch.Tensor] = {}
    ref, macs_before = run(work, x, forward_fn, stats if plans else None, first=True)
    params_before = _params(work)
    spec = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} if isinstance(x, torch.Tensor) else None
    skip: dict[str, str] = {}
    pristine = work  # the reference stays untouched: every attempt works on a fresh copy
    verify_each = False
    while True:
        model = copy.deepcopy(pristine) if plans or units else pristine
        try:
            with WorkGuard(limits.seconds, limits.memory_mb, graph_limit_error):
                removed, reasons, history = _remove(model, plans, skip, stats, x, forward_fn,
                                                    ref if verify_each else None, tolerance, limits)
        except _Restart as r:
            skip[r.module] = r.reason
            continue
        if not check:
            diff, match, macs_after = None, None, compare(model, x, forward_fn, ref)[1]
            break
        diff, macs_after = compare(model, x, forward_fn, ref)
        match = diff <= tolerance * max(1.0, max_abs(ref))
        if match or verify_each or not plans:
            break
        verify_each = True  # a coupling torch-pruning mis-traced: find the layer that breaks the outputs
    for mname, plan in plans.items():
        if mname in reasons:
            kept.append(KeptLayer(plan.name, reasons[mname][0], reasons[mname][1]))
    removed_names = {plans[m].name: n for m, n in removed.items() if n}
    if units and match is not False:  # hidden units and embedding dimensions, checked producer by producer
        done, refused, steps = remove_units(model, units, x, forward_fn, ref, tolerance)
        removed_names.update(done)
        kept += [KeptLayer(n, why, k) for n, why, k in refused]
        history = history + steps
        if steps:
            diff2, macs_after = compare(model, x, forward_fn, ref)
            if check:
                diff = max(diff, diff2)
                match = diff <= tolerance * max(1.0, max_abs(ref))
    elif units:
        kept += [KeptLayer(n, "not tried: the outputs already differ after removing channels", u.pruned)
                 for u in units.values() for n in u.names]
    note = "" if plans or units else NO_STRUCTURE_NOTE if not kept else "nothing could be removed: see kept."
    if match is False:
        note = (f"the slim model's outputs differ from the masked model's by {diff:.3g} (max abs): torch-pruning "
                "mis-traced a coupling pruneviz could not pin to one layer; use the masked model.")
    return SlimResult(model.eval(), removed_names, kept, history,
                      params_before, _params(model), macs_before // 2, macs_after // 2,
                      match, diff, note, spec,
                      time.perf_counter() - t0, tolerance)


def _remove(model: nn.Module, plans: dict[str, _Plan], skip: dict[str, str], stats: dict, x: Any,
            forward_fn: ForwardFn, ref: Any, tolerance: float, limits: WorkLimits):
    """Remove the planned channels from ``model`` in place: (removed per module, kept reasons, history)."""
    removed: dict[str, int] = {}
    reasons: dict[str, tuple[str, int]] = {}
    history: list[dict] = []
    if not plans:
        return removed, reasons, history
    graph, fenced = build_graph(model, x, forward_fn)
    if not any(model.get_submodule(n) in graph.module2node for n in plans):
        raise TraceError(
            f"torch-pruning's trace of {type(model).__name__} contains none of the pruned layers: it follows autograd "
            "back from the output, so the forward must return tensors computed from the input with gradients on "
            "(no torch.no_grad(), .detach() or .item() inside forward). The masked model is unaffected."
        )
    names = {m: n for n, m in model.named_modules()}
    by_module = {model.get_submodule(n): p for n, p in plans.items()}
    bn_owner = {model.get_submodule(p.bn): p for p in plans.values() if p.bn}
    in_stats = {model.get_submodule(n): s for n, s in stats.items()}
    alive: dict[tuple[nn.Module, str], list[int]] = {}
    for mname, plan in plans.items():
        root = model.get_submodule(mname)
        if mname in skip:
            reasons[mname] = (skip[mname], int((~plan.keep).sum()))
            continue
        if root not in graph.module2node:
            reasons[mname] = ("torch-pruning's graph does not contain it (it runs inside another module, such as "
                              "attention, or not at all on the example input)", int((~plan.keep).sum()))
            continue
        key = (root, "out")
        cur = alive.setdefault(key, list(range(graph.get_out_channels(root))))
        want = [i for i, o in enumerate(cur) if not plan.keep[o]]
        if not want:
            continue
        fn_name = "prune_linear_out_channels" if isinstance(root, nn.Linear) else "prune_conv_out_channels"
        fn = getattr(tp, fn_name)
        why: Counter[str] = Counter()
        try:
            with WorkGuard(limits.layer_seconds, limits.layer_memory_mb, LayerTooBig):
                group = graph.get_pruning_group(root, fn, want)
                ok = removable(graph, group, by_module, bn_owner, in_stats, fenced, alive, names, why)
                if ok:
                    group = graph.get_pruning_group(root, fn, ok) if len(ok) < len(want) else group
                    whole = whole_group_problem(graph, group, names)
                    if whole:
                        why[whole] += len(ok)
                        ok = []
        except LayerTooBig as e:
            why.clear()
            why[f"torch-pruning's group for this layer {e} (limits.layer_seconds / layer_memory_mb)"] += len(want)
            ok = []
        except (PrunevizError, _Restart):
            raise
        except Exception as e:  # noqa: BLE001 - torch-pruning raises many kinds: keep this layer, go on
            why[tp_failure(e)] += len(want)
            ok = []
        if ok:
            for dep, _ in group:
                alive_key(graph, dep, alive)
            try:
                group.prune()
            except Exception as e:  # noqa: BLE001 - the model may be half-changed: start again without it
                raise _Restart(mname, f"torch-pruning failed while removing ({type(e).__name__}: {str(e)[:160]})") from e
            for dep, idxs in group:
                k = alive_key(graph, dep, alive)
                if k is not None:
                    gone = set(idxs)
                    alive[k] = [o for j, o in enumerate(alive[k]) if j not in gone]
            history.append({"module": mname, "fn": fn_name, "idxs": [int(i) for i in sorted(ok)]})
            if ref is not None:
                diff, _ = compare(model, x, forward_fn, ref)
                if diff > tolerance * max(1.0, max_abs(ref)):
                    raise _Restart(mname, f"removing its channels changed the outputs by {diff:.3g}: torch-pruning "
                                   "mis-traced a coupling, so they are kept.")
        if why:
            reasons[mname] = ("; ".join(r for r, _ in why.most_common()), sum(why.values()))
    for mname, plan in plans.items():
        cur = alive.get((model.get_submodule(mname), "out"))
        removed[mname] = 0 if cur is None else len(plan.keep) - len(cur)
        if mname in reasons:
            still = len(plan.keep) - int(plan.keep.sum()) - removed[mname]
            reasons[mname] = (reasons[mname][0], still)
            if still == 0:
                del reasons[mname]
    return removed, reasons, history


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
