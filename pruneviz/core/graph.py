"""Which prunable layers produce the model's outputs (its output head), found from the autograd graph.

Removing output channels of such a layer removes classes, box coordinates or heatmap channels, so in
structured scope the global slider leaves them alone. A classifier has one (its last Linear); a detector has
several (a heatmap head and a box head). Found by walking the autograd graph of one forward pass back from
the outputs: the first prunable weight met on each path belongs to an output layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .targets import Target, get_tensor


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    values = getattr(obj, "values", None)  # dict-like outputs (Hugging Face ModelOutput)
    return [t for v in values() for t in _tensors(v)] if callable(values) else []


def _weight_behind(fn: Any, weight_of: dict[int, str], depth: int = 3) -> str | None:
    """The target whose weight feeds ``fn`` directly or through a few single-input steps (a Linear's weight
    arrives transposed: TBackward -> AccumulateGrad)."""
    for _ in range(depth):
        name = weight_of.get(id(getattr(fn, "variable", None)))
        if name is not None:
            return name
        nexts = [f for f, _ in getattr(fn, "next_functions", ()) if f is not None]
        if len(nexts) != 1:
            return None
        fn = nexts[0]
    return None


def output_layers(model: nn.Module, example_input: Any, targets: Sequence[Target]) -> list[str]:
    """Names of the targets whose outputs reach the model's outputs without passing another target (in target
    order); empty if the graph cannot be read (the caller then keeps its default). The model's weights, modes
    and gradients are left as they were."""
    from .tasks import call_model

    weight_of = {id(get_tensor(model, t.name)): t.name for t in targets}
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    found: set[str] = set()
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            outs = [t for t in _tensors(call_model(model, example_input)) if t.grad_fn is not None]
        seen: set[int] = set()
        stack = [t.grad_fn for t in outs]
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            nexts = [f for f, _ in node.next_functions if f is not None]
            hits = [h for f in nexts if (h := _weight_behind(f, weight_of)) is not None]
            if hits:
                found.update(hits)  # this op uses a prunable weight: its inputs lie before that layer
                continue
            stack.extend(nexts)
    except Exception:  # noqa: BLE001 - a model whose graph cannot be read keeps the default
        return []
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
    return [t.name for t in targets if t.name in found]
