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
        self._calls: list = []
        self.reason = ""
        try:
            graph = _ChainTracer().trace(model)
        except Exception as e:  # noqa: BLE001 - any model that does not trace runs whole
            self.reason = f"torch.fx cannot trace it ({type(e).__name__})"
            return
        nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        outputs = [n for n in graph.nodes if n.op == "output"]
        if len(placeholders) != 1:
            self.reason = f"its forward takes {len(placeholders)} inputs, not one"
            return
        if not nodes:
            self.reason = "its forward has no operations"
            return
        prev = placeholders[0]
        for n in nodes:
            if n.op not in ("call_module", "call_function", "call_method") or n.all_input_nodes != [prev]:
                self.reason = f"its forward is not a chain at {n.name}"
                return
            prev = n
        # the forward must return the last stage's value itself (not a tuple/dict built from it)
        if len(outputs) != 1 or outputs[0].args != (prev,) or outputs[0].kwargs:
            self.reason = "its forward does not return the last stage's output as is"
            return
        self.nodes = nodes
        self._calls = [self._callable(n) for n in nodes]
        self.ok = True

    def _callable(self, node: fx.Node):
        """The function a stage calls, looked up once (``run`` is on the hot path of every evaluation)."""
        if node.op == "call_module":
            return self.model.get_submodule(node.target)
        if node.op == "call_function":
            return node.target
        name = node.target
        return lambda obj, *rest, **kw: getattr(obj, name)(*rest, **kw)

    def __len__(self) -> int:
        return len(self.nodes)

    def mutated_inputs(self, x: torch.Tensor) -> set[int]:
        """Stages whose input tensor is modified in place by the rest of the forward (``x += f(x)`` in a
        block, an in-place op on an aliased value...), found by running the example ``x`` through the stages
        with autograd's version counters on. A cached activation entering such a stage would be corrupted by
        the first run that resumes from it: never cache there."""
        if not self.ok:
            return set()
        entering: list[tuple[torch.Tensor, int]] = []
        with torch.no_grad():  # not inference mode: inference tensors have no version counter
            val = x.clone()
            for i, node in enumerate(self.nodes):
                entering.append((val, val._version if isinstance(val, torch.Tensor) else 0))
                args = fx.node.map_arg(node.args, lambda _n, v=val: v)
                kwargs = fx.node.map_arg(node.kwargs, lambda _n, v=val: v)
                val = self._calls[i](*args, **kwargs)
        return {i for i, (t, v) in enumerate(entering) if isinstance(t, torch.Tensor) and t._version != v}

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
        """Run stages ``start..`` (from ``value``, the input of stage ``start``; from ``x`` when start is 0)
        and return the output and the input of stage ``capture`` (if asked)."""
        if not self.ok:
            raise RuntimeError(f"this model cannot run in stages: {self.reason}.")
        if start != 0 and value is None:
            raise ValueError(f"resuming at stage {start} needs the value entering it.")
        val = x if start == 0 else value
        captured = None
        for i in range(start, len(self.nodes)):
            if i == capture:
                captured = val
            node = self.nodes[i]
            args = fx.node.map_arg(node.args, lambda _n, v=val: v)
            kwargs = fx.node.map_arg(node.kwargs, lambda _n, v=val: v)
            val = self._calls[i](*args, **kwargs)
        return val, captured
