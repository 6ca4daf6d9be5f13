"""Importance criteria: one small class each, one interface.

A criterion turns the *original* weights into importance scores: ``weight_scores`` (one score per
weight, for unstructured masks) and ``channel_scores`` (one per output channel, for structured masks).
Low scores are pruned first. Filter-level criteria give every weight of a filter its filter's score,
so they prune whole filters in either scope.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import Batch, describe
from .errors import CriterionError, PrunevizError, suggest
from .masks import expand_channel_mask
from .targets import Target, get_tensor


@dataclass
class ScoreContext:
    """What a criterion may look at: the model, its targets and their original weights."""

    model: nn.Module
    targets: list[Target]
    originals: dict[str, torch.Tensor]
    calib_data: Iterable[Batch] | None = None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    max_batches: int = 8
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    #: original values of other tensors the session may change (biases, BatchNorm scales and shifts)
    extra_originals: dict[str, torch.Tensor] = field(default_factory=dict)
    #: target name -> the BatchNorm module that follows it (None: find them)
    batchnorms: dict[str, str] | None = None
    #: the task whose loss the gradient criteria use (a Task, a task name, or None: picked from the first batch)
    task: Any = None


def channel_view(t: torch.Tensor, target: Target | int) -> torch.Tensor:
    """``t`` (a weight, its mask or its scores) as (units, weights per unit): one row per output channel,
    hidden unit or head (see :class:`~pruneviz.core.targets.Target`); an int is a plain channel dimension."""
    if isinstance(target, int):
        return t.movedim(target, 0).reshape(t.shape[target], -1)
    rows = t.movedim(target.channel_dim, 0)
    blocks = rows.reshape(target.gates, target.channels, target.unit_size, -1)
    return blocks.transpose(0, 1).reshape(target.channels, -1)


def broadcast_channels(scores: torch.Tensor, target: Target) -> torch.Tensor:
    """Give every weight of a unit that unit's score (shape of the weight)."""
    return expand_channel_mask(scores, target).contiguous()


class Criterion:
    """Base class. Subclasses override ``weight_scores`` and/or ``channel_scores``."""

    name: str = ""
    label: str = ""
    description: str = ""
    needs_data: bool = False

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        chans = self.channel_scores(ctx)
        return {t.name: None if chans[t.name] is None else broadcast_channels(chans[t.name], t) for t in ctx.targets}

    def channel_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        """Default: the L1 sum of the weight scores over each output channel."""
        out: dict[str, torch.Tensor | None] = {}
        for t, (name, s) in zip(ctx.targets, self.weight_scores(ctx).items(), strict=True):
            out[name] = None if s is None else channel_view(s, t).sum(dim=1)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Magnitude(Criterion):
    name, label = "magnitude", "Magnitude |w|"
    description = "Prune the weights with the smallest absolute value (Han et al. 2015)."

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        return {t.name: ctx.originals[t.name].abs().float() for t in ctx.targets}


class Random(Criterion):
    name, label = "random", "Random (baseline)"
    description = "Prune at random (seeded): the baseline every criterion must beat."

    def _gen(self, ctx: ScoreContext, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(ctx.seed * 1_000_003 + salt)

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        return {t.name: torch.rand(t.shape, generator=self._gen(ctx, i)) for i, t in enumerate(ctx.targets)}

    def channel_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        return {t.name: torch.rand(t.channels, generator=self._gen(ctx, 7919 + i)) for i, t in enumerate(ctx.targets)}


def _gradients(ctx: ScoreContext, criterion: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Mean gradient and mean squared (w*grad) of the loss at the original weights, over the batches.

    Works on a copy of the model so the user's model (weights, grads, BN statistics) is untouched.
    """
    if "grads" in ctx.cache:
        return ctx.cache["grads"]
    if ctx.calib_data is None:
        raise CriterionError(
            f"criterion {criterion!r} needs gradients, and no data was given: pass "
            "calib_data=[(inputs, labels), ...] (a few batches) to the session, or choose 'magnitude'."
        )
    from .tasks import task_for_batch

    work = copy.deepcopy(ctx.model).eval()
    with torch.no_grad():  # gradients at the original (unpruned) model
        for name, value in ctx.extra_originals.items():
            get_tensor(work, name).copy_(value)
    params = {}
    for t in ctx.targets:
        p = get_tensor(work, t.name)
        with torch.no_grad():
            p.copy_(ctx.originals[t.name])
        params[t.name] = p
    for p in work.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    grad_sum = {n: torch.zeros_like(p) for n, p in params.items()}
    taylor_sum = {n: torch.zeros_like(p) for n, p in params.items()}
    n_batches = 0
    task = None
    with torch.enable_grad():
        for i, batch in enumerate(ctx.calib_data):
            if i >= ctx.max_batches:
                break
            try:
                if task is None:
                    task = task_for_batch(ctx.task, work, batch, loss_fn=ctx.loss_fn)
                loss = task.loss(work, batch)
            except Exception as e:  # noqa: BLE001 - data that does not fit the model, raised deep inside torch
                from .diagnose import diagnose

                hint = "" if isinstance(e, PrunevizError) else diagnose(work, batch[0], e)
                what = e if isinstance(e, PrunevizError) else f"{hint + ' (' if hint else ''}{type(e).__name__}: {str(e)[:300]}{')' if hint else ''}"
                raise CriterionError(
                    f"criterion {criterion!r} cannot compute the loss on calibration batch {i} (inputs "
                    f"{describe(batch[0])}, targets {describe(batch[1])}): {what}. Pass calib_data batches of the "
                    "form the evaluation data has (the model's inputs and its targets), or choose 'magnitude'."
                ) from e
            if not torch.isfinite(loss):
                raise CriterionError(f"criterion {criterion!r}: the loss on calibration batch {i} is {loss.item()}.")
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, p), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    grad_sum[n] += g
                    taylor_sum[n] += (p.detach() * g) ** 2
            n_batches += 1
    if n_batches == 0:
        raise CriterionError(f"criterion {criterion!r}: calib_data gave no batches; pass at least one (inputs, labels).")
    ctx.cache["grads"] = (
        {n: g / n_batches for n, g in grad_sum.items()},
        {n: g / n_batches for n, g in taylor_sum.items()},
    )
    return ctx.cache["grads"]


class Saliency(Criterion):
    name, label = "saliency", "Saliency |w*grad|"
    description = "Prune weights whose removal changes the loss least to first order: |w * dL/dw|."
    needs_data = True

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        grads, _ = _gradients(ctx, self.name)
        return {t.name: (ctx.originals[t.name] * grads[t.name]).abs().float() for t in ctx.targets}


class Taylor(Criterion):
    name, label = "taylor", "Taylor (w*grad)^2"
    description = "First-order Taylor importance, (w * dL/dw)^2 averaged over batches (Molchanov et al. 2019)."
    needs_data = True

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        _, taylor = _gradients(ctx, self.name)
        return {t.name: taylor[t.name].float() for t in ctx.targets}


class FilterNorm(Criterion):
    """Lp norm of each output filter (Li et al. 2017): a structured criterion."""

    def __init__(self, p: int = 1):
        self.p = p
        self.name = f"l{p}_filter"
        self.label = f"L{p}-norm of filters"
        self.description = f"Prune whole filters with the smallest L{p} norm (Li et al. 2017)."

    def channel_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        return {
            t.name: channel_view(ctx.originals[t.name].float(), t).norm(p=self.p, dim=1)
            for t in ctx.targets
        }

    def __repr__(self) -> str:
        return f"FilterNorm(p={self.p})"


def find_batchnorms(model: nn.Module, targets: list[Target]) -> dict[str, str]:
    """Map conv/linear target names to the name of the BatchNorm that normalises their output.

    Uses ``torch.fx`` when the model traces; otherwise the module that directly follows in
    registration order, if it is a BatchNorm with matching features.
    """
    by_module = {t.module_name: t for t in targets}
    found: dict[str, str] = {}
    try:
        gm = torch.fx.symbolic_trace(model)
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
                continue
            src = node.args[0]
            if getattr(src, "op", None) == "call_module" and src.target in by_module:
                t = by_module[src.target]
                if modules[node.target].num_features == t.channels:
                    found[t.name] = node.target
        return found
    except Exception:  # noqa: BLE001 - any trace failure falls back to registration order
        pass
    names = list(model.named_modules())
    for i, (mname, _) in enumerate(names):
        if mname in by_module and i + 1 < len(names):
            nxt_name, nxt = names[i + 1]
            t = by_module[mname]
            if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and nxt.num_features == t.channels:
                found[t.name] = nxt_name
    return found


class BNScale(Criterion):
    name, label = "bn_scale", "BN scale |gamma| (slimming)"
    description = "Prune channels whose BatchNorm scale |gamma| is smallest (network slimming, Liu et al. 2017)."

    def channel_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        bns = ctx.batchnorms if ctx.batchnorms is not None else find_batchnorms(ctx.model, ctx.targets)
        if not bns:
            raise CriterionError(
                "criterion 'bn_scale' needs convolutions followed by BatchNorm, and "
                f"{type(ctx.model).__name__} has none among its prunable layers; choose 'l1_filter' instead."
            )
        out: dict[str, torch.Tensor | None] = {}
        for t in ctx.targets:
            bn = bns.get(t.name)
            if bn is None:
                out[t.name] = None
                continue
            gamma = ctx.extra_originals.get(f"{bn}.weight")
            if gamma is None:
                gamma = get_tensor(ctx.model, bn + ".weight").detach()
            out[t.name] = gamma.abs().float().clone()
        return out


def _registry() -> dict[str, Callable[[], Criterion]]:
    from .criteria_modern import LAMP, Wanda  # a module of its own (it imports this one)

    return {
        "magnitude": Magnitude,
        "random": Random,
        "saliency": Saliency,
        "taylor": Taylor,
        "l1_filter": lambda: FilterNorm(1),
        "l2_filter": lambda: FilterNorm(2),
        "bn_scale": BNScale,
        "lamp": LAMP,
        "wanda": Wanda,
    }


CRITERIA: tuple[str, ...] = tuple(_registry())


def get_criterion(name: str | Criterion) -> Criterion:
    """The criterion called ``name`` (one of :data:`CRITERIA`), or ``name`` itself if it is one."""
    if isinstance(name, Criterion):
        return name
    reg = _registry()
    if name not in reg:
        raise CriterionError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}." + suggest(str(name), reg))
    return reg[name]()
