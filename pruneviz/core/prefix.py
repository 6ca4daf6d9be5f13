"""Split a model into a chain of stages so evaluation can restart from a cached activation.

When only deep layers change, the activations entering the first changed stage are the same as last time:
caching them skips the unchanged prefix of the network. The split uses ``torch.fx``: containers
(``nn.Sequential``) are inlined and every other module is one stage, so ResNet becomes
conv1 -> bn1 -> relu -> maxpool -> layer1.0 -> ... -> layer4.1 -> avgpool -> flatten -> fc. Models whose
forward is not such a chain (or that do not trace) run whole: :attr:`StagedModel.ok` is False.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx, nn


class _ChainTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not isinstance(m, nn.Sequential)


class StagedModel:
    """``model`` as a list of stages; ``run(x, start, value)`` resumes at stage ``start`` from ``value``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.ok = False
        self.nodes: list[fx.Node] = []
        self.reason = ""
        try:
            graph = _ChainTracer().trace(model)
        except Exception as e:  # noqa: BLE001 - any model that does not trace runs whole
            self.reason = f"torch.fx cannot trace it ({type(e).__name__})"
            return
        nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1 or not nodes:
            self.reason = "its forward takes more than one input"
            return
        prev = placeholders[0]
        for n in nodes:
            if n.op not in ("call_module", "call_function", "call_method") or n.all_input_nodes != [prev]:
                self.reason = f"its forward is not a chain at {n.name}"
                return
            prev = n
        self.nodes = nodes
        self.ok = True

    def __len__(self) -> int:
        return len(self.nodes)

    def stage_of(self, module_name: str) -> int:
        """Index of the stage that contains module ``module_name`` (0 if unknown: run everything)."""
        for i, n in enumerate(self.nodes):
            if n.op == "call_module" and (module_name == n.target or module_name.startswith(f"{n.target}.")):
                return i
        return 0

    def first_stage(self, module_names: Iterable[str]) -> int | None:
        stages = [self.stage_of(m) for m in module_names]
        return min(stages) if stages else None

    def run(
        self, x: torch.Tensor, start: int = 0, value: torch.Tensor | None = None, capture: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run stages ``start..`` (from ``value``, the input of stage ``start``; or from ``x`` when start is 0)
        and return the output and the input of stage ``capture`` (if asked)."""
        val = x if start == 0 else value
        captured = None
        for i in range(start, len(self.nodes)):
            if i == capture:
                captured = val
            node = self.nodes[i]
            args = fx.node.map_arg(node.args, lambda _n, v=val: v)
            kwargs = fx.node.map_arg(node.kwargs, lambda _n, v=val: v)
            if node.op == "call_module":
                val = self.model.get_submodule(node.target)(*args, **kwargs)
            elif node.op == "call_function":
                val = node.target(*args, **kwargs)
            else:
                obj, *rest = args
                val = getattr(obj, node.target)(*rest, **kwargs)
        return val, captured
