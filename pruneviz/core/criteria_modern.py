"""Two modern criteria: LAMP (Lee et al. 2021) and Wanda (Sun et al. 2023).

* **LAMP** (layer-adaptive magnitude-based pruning): within each layer, sort the weights ascending by
  magnitude; weight ``u`` (at sorted position ``i``) scores ``w_u^2 / sum_{j >= i} w_j^2``. The largest weight of
  every layer scores 1, so a global threshold never empties a layer; meaningful in *global* scope (within
  one layer the order is the magnitude order). Structured scope: the same formula over the layer's
  squared channel L2 norms (as torch-pruning's LAMP importance does for groups).
* **Wanda** (pruning by weights and activations): ``|W_ij| * ||X_j||_2``, with ``X_j`` the j-th input feature
  of the layer over the calibration batches (every sample and position). Needs calibration data.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .batches import describe
from .criteria import Criterion, ScoreContext, channel_view
from .errors import CriterionError, PrunevizError
from .targets import Target, get_tensor

__all__ = ["LAMP", "Wanda", "lamp_scores"]


def lamp_scores(values: torch.Tensor) -> torch.Tensor:
    """LAMP score of every entry of ``values`` (magnitudes or weights; squared here), in its shape.

    Ties in magnitude go by index (a stable sort); a tail of zeros scores 0.
    """
    sq = values.detach().double().reshape(-1) ** 2
    order = torch.argsort(sq, stable=True)
    s = sq[order]
    tail = torch.flip(torch.cumsum(torch.flip(s, [0]), 0), [0])  # sum_{j >= i} of the sorted squares
    sorted_scores = torch.where(tail > 0, s / tail.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(s))
    out = torch.empty_like(sorted_scores)
    out[order] = sorted_scores
    return out.view(values.shape)


class LAMP(Criterion):
    name, label = "lamp", "LAMP (layer-adaptive)"
    description = ("Layer-adaptive magnitude pruning (Lee et al. 2021): w^2 over the sum of the squares of the "
                   "layer's weights that are at least as large; made for global scope.")

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        return {t.name: lamp_scores(ctx.originals[t.name]) for t in ctx.targets}

    def channel_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        return {t.name: lamp_scores(channel_view(ctx.originals[t.name].double(), t).norm(dim=1)) for t in ctx.targets}


# ------------------------------------------------------------------------------------------------ Wanda
_CONV = (nn.modules.conv._ConvNd,)


def _scorable(module: nn.Module, t: Target) -> bool:
    """Whether Wanda can score target ``t`` of ``module`` (its input features are what the module receives)."""
    if isinstance(module, nn.MultiheadAttention):
        return t.param_name == "in_proj_weight"
    return t.param_name == "weight" and isinstance(module, (nn.Linear, *_CONV))


def _sumsq(x: Any, feature_dim: int) -> torch.Tensor | None:
    """Sum of squares of every input feature of ``x`` (float64), over all other dimensions."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() == 0:
        return None
    x = x.detach().double()
    return x.movedim(feature_dim, -1).reshape(-1, x.shape[feature_dim]).pow(2).sum(0)


def _collect_norms(ctx: ScoreContext, names: list[str]) -> dict[str, torch.Tensor]:
    """Input-feature L2 norms of the modules owning ``names``, over the calibration batches, on a copy of the
    model at its original weights (the user's model, its BatchNorm statistics and modes are untouched)."""
    if ctx.calib_data is None:
        raise CriterionError(
            "criterion 'wanda' needs calibration data (it scores |w| times the norm of the layer's inputs): pass "
            "calib_data=[(inputs, targets), ...] (a few batches) to the session, or choose 'magnitude' or 'lamp'."
        )
    from .tasks import call_model

    work = copy.deepcopy(ctx.model).eval()
    with torch.no_grad():
        for name, value in {**ctx.extra_originals, **ctx.originals}.items():
            get_tensor(work, name).copy_(value)
    by_name = {t.name: t for t in ctx.targets}
    sums: dict[str, list[torch.Tensor | None]] = {}
    hooks = []

    def hook_for(key: str, module: nn.Module):
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            if isinstance(mod, nn.MultiheadAttention):  # (query, key, value): rows q | k | v of in_proj_weight
                qkv = [args[i] if len(args) > i else kwargs.get(k) for i, k in enumerate(("query", "key", "value"))]
                dim = -1
            else:
                qkv, dim = [args[0] if args else kwargs.get("input")], (-1 if isinstance(mod, nn.Linear) else None)
            got = []
            for x in qkv:
                if dim is None:  # a convolution: channels are dim 1 of a batch, dim 0 of one unbatched sample
                    batched = isinstance(x, torch.Tensor) and x.dim() == mod.weight.dim()
                    got.append(_sumsq(x, 1 if batched else 0))
                else:
                    got.append(_sumsq(x, dim))
            prev = sums.get(key)
            sums[key] = got if prev is None else [None if a is None or b is None else a + b
                                                  for a, b in zip(prev, got, strict=True)]
        return hook

    modules: dict[str, nn.Module] = {}
    for n in names:
        t = by_name[n]
        module = work.get_submodule(t.module_name)
        if _scorable(module, t) and t.module_name not in modules:
            modules[t.module_name] = module
            hooks.append(module.register_forward_pre_hook(hook_for(t.module_name, module), with_kwargs=True))
    batches = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(ctx.calib_data):
                if i >= ctx.max_batches:
                    break
                inputs = batch[0]
                try:
                    call_model(work, inputs)
                except Exception as e:  # noqa: BLE001 - data that does not fit the model
                    what = e if isinstance(e, PrunevizError) else f"{type(e).__name__}: {str(e)[:300]}"
                    raise CriterionError(
                        f"criterion 'wanda' cannot run the model on calibration batch {i} (inputs "
                        f"{describe(inputs)}): {what}. Pass calib_data batches of the form the evaluation data has."
                    ) from e
                batches += 1
    finally:
        for h in hooks:
            h.remove()
    if batches == 0:
        raise CriterionError("criterion 'wanda': calib_data gave no batches; pass at least one (inputs, targets).")
    out: dict[str, torch.Tensor] = {}
    for key, got in sums.items():
        if all(g is not None for g in got):
            out[key] = torch.cat([g.sqrt() for g in got]) if len(got) > 1 else got[0].sqrt()
    return out


def _wanda_score(w: torch.Tensor, norms: torch.Tensor, module: nn.Module) -> torch.Tensor | None:
    """``|W| * ||X_j||`` with the input-feature norms laid out along the weight's input dimension."""
    w = w.detach().double().abs()
    if isinstance(module, nn.MultiheadAttention):  # rows q|k|v each read their own input (query, key, value)
        e = w.shape[0] // 3
        if norms.numel() != 3 * w.shape[1]:
            return None
        per_row = norms.view(3, 1, w.shape[1]).expand(3, e, w.shape[1]).reshape(w.shape)
        return (w * per_row).float()
    if isinstance(module, nn.Linear):
        return (w * norms.view(1, -1)).float() if norms.numel() == w.shape[1] else None
    groups = getattr(module, "groups", 1)
    extra = [1] * (w.dim() - 2)
    if getattr(module, "transposed", False):  # weight (in, out/groups, *k): input channels are rows
        return (w * norms.view(-1, 1, *extra)).float() if norms.numel() == w.shape[0] else None
    out_ch, in_per_group = w.shape[0], w.shape[1]
    if norms.numel() != in_per_group * groups:
        return None
    group_of_out = torch.arange(out_ch) // (out_ch // groups)
    per_out = norms.view(groups, in_per_group)[group_of_out]  # (out, in/groups): the inputs each filter reads
    return (w * per_out.view(out_ch, in_per_group, *extra)).float()


class Wanda(Criterion):
    """Wanda: ``|W_ij| * ||X_j||_2``. Convolutions: the norm of input channel c over every sample and
    position, for every kernel entry that reads channel c (a column of the unfolded weight); grouped
    convolutions read their group's channels. Packed attention projections: the q, k and v rows use the norms
    of the query, key and value inputs. Layers whose inputs cannot be seen (recurrent weights, embeddings, a
    module the model never calls) get no score and stay dense."""

    name, label = "wanda", "Wanda |w|·‖x‖"
    description = ("Pruning by weights and activations (Sun et al. 2023): |w| times the L2 norm of the input "
                   "feature it multiplies, over the calibration batches.")
    needs_data = True

    def weight_scores(self, ctx: ScoreContext) -> dict[str, torch.Tensor | None]:
        cache: dict[str, torch.Tensor] = ctx.cache.setdefault("wanda_norms", {})
        seen: set[str] = ctx.cache.setdefault("wanda_seen", set())
        missing = [t.name for t in ctx.targets if t.module_name not in seen]
        if missing:
            cache.update(_collect_norms(ctx, missing))
            seen.update(t.module_name for t in ctx.targets)
        out: dict[str, torch.Tensor | None] = {}
        for t in ctx.targets:
            module = ctx.model.get_submodule(t.module_name)
            norms = cache.get(t.module_name)
            out[t.name] = None if norms is None or not _scorable(module, t) else _wanda_score(
                ctx.originals[t.name], norms, module)
        return out
