"""torch-pruning's dependency graph, built safely: a time/memory guard, and reshapes it cannot map fenced off.

Used by :mod:`pruneviz.core.removal`. Three traps of torch-pruning 1.6 are handled here:

* ``get_all_groups()`` grew past 20 GB on Swin: it is never called; groups are built one pruned layer at a
  time, all under a :class:`WorkGuard` that interrupts the work when it takes longer or grows the process's
  memory more than a limit (:class:`WorkLimitError`).
* ShuffleNetV2's channel shuffle raises ``ZeroDivisionError`` while torch-pruning maps indices through the
  reshape. Such a node is *fenced*: its index mapping is skipped and every group that passes through it is
  refused by the caller (its channels are kept and reported), the rest of the model is still slimmed.
* Tracing needs autograd: the graph is built with gradients on, even inside ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops
from torch_pruning.dependency import index_mapping

from .errors import PrunevizError
from .guard import WorkGuard, _async_raise, _LimitHit, _rss_bytes  # noqa: F401 - re-exported for removal.py

ForwardFn = Callable[[nn.Module, Any], Any]


class RemovalError(PrunevizError):
    """Physical channel removal could not run (the masked model is unaffected)."""


class ExampleInputError(RemovalError):
    """The example input does not fit the model."""


class TraceError(RemovalError):
    """torch-pruning could not trace the model into a dependency graph."""


class WorkLimitError(RemovalError):
    """Building the dependency graph took more time or memory than allowed."""


@dataclass(frozen=True)
class WorkLimits:
    """Limits for torch-pruning's graph work, in wall seconds and MB of growth of the process's resident memory
    (``None`` disables one). ``seconds``/``memory_mb`` bound the whole removal (over them: :class:`WorkLimitError`);
    ``layer_seconds``/``layer_memory_mb`` bound building one layer's group (over them the layer keeps its channels
    and the rest goes on)."""

    seconds: float | None = 300.0
    memory_mb: float | None = 4096.0
    layer_seconds: float | None = 20.0
    layer_memory_mb: float | None = 1024.0


def default_forward(model: nn.Module, example_input: Any) -> Any:
    return model(example_input)


class LayerTooBig(Exception):  # noqa: N818 - internal control flow
    """One layer's group took more time or memory than ``WorkLimits.layer_*`` allows."""


def graph_limit_error(why: str) -> WorkLimitError:
    return WorkLimitError(
        f"building torch-pruning's dependency graph {why}, so pruneviz stopped it (torch-pruning's graph walk can "
        "grow without bound on some models, e.g. Swin). The masked model is unchanged. Raise the limit with "
        "limits=WorkLimits(seconds=..., memory_mb=...) if the machine can afford it, or remove channels on a "
        "smaller part of the model."
    )


_MAPPERS = {
    ops.OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
    ops.OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    ops.OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
    ops.OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
    ops.OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
    ops.OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}


def _nearest_layer(graph: tp.DependencyGraph, node: Any) -> str:
    """The name of the closest named module upstream of ``node`` (for messages)."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        name = graph._module2name.get(n.module)
        if isinstance(n.module, nn.Module) and name:
            return name
        stack.extend(n.inputs)
    return "the model's input"


def _fence_unmappable(graph: tp.DependencyGraph) -> dict[Any, str]:
    """Map indices node by node; a node whose mapping raises is fenced (mapping skipped), with the reason."""
    fenced: dict[Any, str] = {}
    for _ in range(len(graph.module2node) + 1):
        failed = False
        for node in list(graph.module2node.values()):
            mapper = _MAPPERS.get(node.type)
            if mapper is None:
                continue
            try:
                mapper(graph, node)
            except Exception as e:  # noqa: BLE001 - torch-pruning raises many kinds here
                fenced[node] = (f"torch-pruning cannot map channels through the reshape after "
                                f"{_nearest_layer(graph, node)} ({type(e).__name__}: {e})")
                node.type = ops.OPTYPE.ELEMENTWISE  # skipped from now on; groups through it are refused
                failed = True
        if not failed:
            break
    index_mapping.update_index_mapping(graph)  # must not raise any more
    return fenced


def build_graph(
    model: nn.Module, example_input: Any, forward_fn: ForwardFn | None = None
) -> tuple[tp.DependencyGraph, dict[Any, str]]:
    """torch-pruning's dependency graph of ``model`` and its fenced nodes (node -> why), built with autograd on.

    Raises :class:`TraceError` when the model cannot be traced at all.
    """
    forward_fn = forward_fn or default_forward
    graph = tp.DependencyGraph()
    with torch.inference_mode(False), torch.enable_grad():
        x = detach_input(example_input)
        try:
            graph.build_dependency(model, example_inputs=x, forward_fn=forward_fn, verbose=False)
        except Exception as e:  # noqa: BLE001 - a failing index mapping is fenced below
            in_mapping = any(f.f_code.co_filename.endswith("index_mapping.py") for f, _ in traceback.walk_tb(e.__traceback__))
            if not in_mapping or not getattr(graph, "module2node", None):
                raise TraceError(
                    f"torch-pruning could not trace {type(model).__name__} ({type(e).__name__}: {str(e)[:300]}). "
                    "It follows autograd from the output: the forward must return tensors (or a tuple/dict of "
                    "them) computed with differentiable ops; pass forward_fn=lambda model, x: ... to say how to "
                    "run the model. The masked model is unaffected."
                ) from None
    return graph, _fence_unmappable(graph)


def detach_input(x: Any) -> Any:
    """A copy of the example input usable by autograd (inference-mode tensors are cloned)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: detach_input(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(detach_input(v) for v in x)
    return x


def replay(
    model: nn.Module, history: list[dict], example_input: Any, forward_fn: ForwardFn | None = None
) -> nn.Module:
    """Remove channels from a freshly built ``model`` exactly as recorded in ``history`` (in place); returns it.

    torch-pruning steps need ``example_input`` to build the graph; hidden-unit and embedding steps
    (:mod:`pruneviz.core.removal_units`) do not, so a history of those alone replays with ``example_input=None``.
    """
    from .removal_units import UNIT_STEPS, replay_unit_step

    graph = None
    for step in history:
        if step.get("fn") in UNIT_STEPS:
            replay_unit_step(model, step)
            continue
        fn = getattr(tp, step["fn"], None) if str(step.get("fn", "")).startswith("prune_") else None
        if fn is None:
            raise RemovalError(f"unknown pruning function {step.get('fn')!r} in the removal history.")
        if graph is None:
            graph, _ = build_graph(model, example_input, forward_fn)
        module = model.get_submodule(step["module"])
        graph.get_pruning_group(module, fn, [int(i) for i in step["idxs"]]).prune()
    return model.eval()


def coupled_groups(model: nn.Module, example_input: Any, *, forward_fn: ForwardFn | None = None,
                   limits: WorkLimits = WorkLimits()) -> list[list[str]]:
    """Module names of the Conv/Linear layers whose output channels are coupled (residual adds, multiplications,
    depthwise convolutions), one list per coupling; uncoupled layers are left out.

    Channels of a coupled layer can be removed only where every layer of its list prunes them too: a criterion
    that ranks channels jointly per list (the same choice for all) lets :func:`slim` remove the residual stream.
    """
    with torch.inference_mode(False):
        work = copy.deepcopy(model).eval()
        out, seen = [], set()
        with WorkGuard(limits.seconds, limits.memory_mb, graph_limit_error):
            graph, _ = build_graph(work, example_input, forward_fn)
            names = {m: n for n, m in work.named_modules()}
            for m in names:
                if not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or m in seen or m not in graph.module2node:
                    continue
                fn = tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels
                try:
                    with WorkGuard(limits.layer_seconds, limits.layer_memory_mb, LayerTooBig):
                        group = graph.get_pruning_group(m, fn, [0])
                except (LayerTooBig, Exception):  # noqa: BLE001 - a layer torch-pruning cannot group stays alone
                    continue
                members = list(dict.fromkeys(
                    d.target.module for d, _ in group
                    if isinstance(d.target.module, (nn.modules.conv._ConvNd, nn.Linear))
                    and graph.is_out_channel_pruning_fn(d.handler)))
                seen.update(members)
                if len(members) > 1:
                    out.append([names[x] for x in members])
    return out
