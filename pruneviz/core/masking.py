"""How a plan becomes masks (mixed into :class:`~pruneviz.core.session.PruningSession`).

The plan is validated, the criterion's scores for its scope are ranked once and cached (every later slider
move reuses them), and each tensor is written from its original weights with the rank masks of
:mod:`pruneviz.core.masks`; a tensor whose state did not change is not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch

from .criteria import Criterion, ScoreContext, get_criterion
from .errors import CriterionError, UnknownLayerError, suggest
from .masks import (
    all_finite,
    apply_rank_mask,
    check_sparsity,
    expand_channel_mask,
    global_ranks,
    mask_from_rank,
    n_pruned,
    rank_of,
    unit_rows,
)
from .plan import Plan
from .ranking import GlobalOrder, Ordered
from .targets import Target

log = logging.getLogger(__name__)


class MaskingMixin:
    """Plan validation, ranking and mask writing of :class:`~pruneviz.core.session.PruningSession`."""

    def _criterion(self, criterion: str | Criterion) -> Criterion:
        if isinstance(criterion, Criterion):
            self._criteria[criterion.name] = criterion
            return criterion
        if criterion not in self._criteria:
            self._criteria[criterion] = get_criterion(criterion)
        return self._criteria[criterion]

    def _validate(self, plan: Plan) -> Plan:
        crit = self._criterion(plan.criterion)
        if crit.needs_data and self._ctx.calib_data is None:
            need = "gradients" if crit.name in ("saliency", "taylor") else "calibration data"
            raise CriterionError(
                f"criterion {crit.name!r} needs {need}, and this session has no data: create it with "
                "calib_data=[(inputs, labels), ...] (a few batches), or choose 'magnitude'."
            )
        unknown = [n for n in plan.sparsity if n not in self._by_name]
        if unknown:
            raise UnknownLayerError(
                f"the plan names {unknown[0]!r}, which is not a prunable tensor here." + suggest(unknown[0], self._by_name)
            )
        sparsity = {n: check_sparsity(plan.sparsity.get(n, 0.0), f"layer {n!r}") for n in self._by_name}
        if plan.scope == "structured":
            sparsity = self._group_values(sparsity)
        g = check_sparsity(plan.global_sparsity, "the global slider")
        return plan.with_(sparsity=sparsity, global_sparsity=g)

    def _sub_ctx(self, targets: list[Target]) -> ScoreContext:
        c = self._ctx
        return ScoreContext(c.model, targets, c.originals, c.calib_data, c.loss_fn, c.max_batches, c.seed, c.cache,
                            c.extra_originals, c.batchnorms, c.task)

    def _channel_scores(self, crit: Criterion) -> dict[str, torch.Tensor | None]:
        key = "channel:" + crit.name
        if key not in self._ctx.cache:
            scores = crit.channel_scores(self._ctx)
            self._check_scores(crit, scores)
            self._ctx.cache[key] = scores
        return self._ctx.cache[key]

    @staticmethod
    def _check_scores(crit: Criterion, scores: Mapping[str, torch.Tensor | None]) -> None:
        bad = [n for n, s in scores.items() if s is not None and not all_finite(s)]
        if bad:
            raise CriterionError(f"criterion {crit.name!r} gave NaN/inf scores for {', '.join(bad)}.")
        if all(s is None for s in scores.values()):
            raise CriterionError(f"criterion {crit.name!r} cannot score any layer of this model.")

    def _ranks_for(self, plan: Plan) -> tuple[tuple[str, str], dict[str, torch.Tensor | None]]:
        """Ranked scores for the plan's criterion and scope: computed once, reused by every slider move."""
        crit = self._criterion(plan.criterion)
        key = (crit.name, plan.scope, self._base)
        if key == self._rank_key:
            return key, self._ranks
        self._progress(f"scoring the weights ({crit.label or crit.name})", 0.1)
        try:
            return self._rank(plan, crit, key)
        finally:
            self._progress("", 1.0)

    def _progress(self, stage: str, fraction: float) -> None:
        """Tell ``session.progress(stage, fraction)`` (if set) how a ranking goes: big models take seconds."""
        hook = getattr(self, "progress", None)
        if hook is not None and self._big:
            try:
                hook(stage, fraction)
            except Exception:  # noqa: BLE001 - a broken view must not stop the ranking
                log.exception("pruneviz: a progress hook raised")

    def _rank(self, plan: Plan, crit: Criterion, key: tuple) -> tuple[tuple[str, str], dict]:
        if plan.scope == "structured":
            if self._coupled is None and self._example_input is not None:
                self._couple(quiet=True)
            chans = self._group_scores(self._pin(dict(self._channel_scores(crit)), structured=True))
            return key, {n: None if s is None else rank_of(s) for n, s in chans.items()}
        scores = crit.weight_scores(self._ctx)
        self._check_scores(crit, scores)
        scores = self._pin(scores, structured=False)
        self._progress("ranking the weights", 0.4)
        if self._engine == "order":  # big models: positions in pruning order, moves write only what changed
            if plan.scope == "global":
                g = GlobalOrder.of({n: s for n, s in scores.items() if s is not None})
                return key, {n: g.parts.get(n) for n in scores}
            return key, {n: None if s is None else Ordered.of(s) for n, s in scores.items()}
        if plan.scope == "global":
            granks = global_ranks({n: s for n, s in scores.items() if s is not None})
            return key, {n: granks.get(n) for n in scores}
        return key, {n: None if s is None else rank_of(s) for n, s in scores.items()}

    def _couple(self, quiet: bool) -> None:
        """Find the coupled layers for structured ranking (see ``couple_channels``); ``quiet``: a model
        torch-pruning cannot trace stays uncoupled (logged) instead of raising."""
        from .removal import coupled_groups

        by_module = {t.module_name: t.name for t in self.targets}
        found = []
        try:
            groups = coupled_groups(self.model, self._example_input)
        except Exception:  # noqa: BLE001 - no coupling: every layer keeps its own channel choice
            if not quiet:
                raise
            log.warning("pruneviz: the coupled channels could not be found; structured layers rank alone",
                        exc_info=True)
            groups = []
        for modules in groups:
            names = [by_module[m] for m in modules if m in by_module and by_module[m] not in self._protected]
            if len(names) > 1 and len({self._by_name[n].channels for n in names}) == 1:
                found.append(names)
        self._coupled = found
        for i, names in enumerate(found):
            self._unit_groups[f"coupled:{i}"] = names

    def _group_scores(self, chans: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
        """Units shared by several tensors (an RNN layer's weight_ih and weight_hh) score as one: the sum of
        their scores, so each member ranks and prunes the same units."""
        out = dict(chans)
        for members in self._unit_groups.values():
            scores = [chans[m] for m in members]
            if any(s is None for s in scores):
                for m in members:
                    out[m] = None
                continue
            total = torch.stack([s.float() for s in scores]).sum(0)
            for m in members:
                out[m] = total
        return out

    def _group_values(self, sparsity: dict[str, float], changed: Iterable[str] = ()) -> dict[str, float]:
        """Structured scope: every member of a unit group gets one value (the one just set, else the first's)."""
        changed = list(changed)
        for members in self._unit_groups.values():
            lead = next((m for m in changed if m in members), members[0])
            for m in members:
                sparsity[m] = sparsity[lead]
        return sparsity

    def _check_supported(self, names: Iterable[str], values: Mapping[str, float]) -> None:
        plan = self._plan
        _, ranks = self._ranks_for(plan)
        bad = [n for n in names if ranks.get(n) is None and values[n] > 0]
        if bad:
            raise CriterionError(
                f"criterion {plan.criterion!r} cannot score layer {bad[0]!r} (no BatchNorm follows it), so it "
                "cannot prune it: leave it at 0 or choose another criterion such as 'l1_filter'."
            )

    def _channels_pruned(self, t: Target) -> int:
        state = self._applied[t.name]
        return state[2] if state[0] == "structured" else 0

    def _apply(self, plan: Plan) -> tuple[str, ...]:
        changed = []
        pool = sum(t.numel for t in self.targets if self._ranks.get(t.name) is not None)
        k_global = n_pruned(plan.global_sparsity, pool)
        counts = None
        g = next((r.owner for r in self._ranks.values() if isinstance(r, Ordered) and r.owner is not None), None)
        if plan.scope == "global" and g is not None:
            counts = g.counts(k_global)
        with torch.no_grad():
            for t in self.targets:
                rank = self._ranks.get(t.name)
                n = t.name
                if rank is None:
                    state: tuple = ("dense", self._base)
                elif plan.scope == "global":
                    state = ("global", self._rank_key, k_global)
                elif plan.scope == "structured":
                    state = ("structured", self._rank_key, n_pruned(plan.sparsity[n], t.channels))
                else:
                    state = ("layer", self._rank_key, n_pruned(plan.sparsity[n], t.numel))
                if state[-1] == 0 or (counts is not None and state[0] == "global" and counts[n] == 0):
                    state = ("dense", self._base)
                if state == self._applied[n]:
                    continue
                self._write(t, state, rank, counts)
                self._applied[n] = state
                changed.append(n)
        return tuple(changed)

    def _write(self, t: Target, state: tuple, rank, counts: dict[str, int] | None = None) -> None:
        n = t.name
        param, orig = self._params[n], self._originals[n]
        self._mask_cache.pop(n, None)
        bias_keep = None
        prev = self._applied[n]
        if state[0] == "dense":
            param.copy_(orig)
            self._zeros[n] = 0
        elif isinstance(rank, Ordered):  # the big-model engine (layer and global scope)
            j = counts[n] if state[0] == "global" else state[2]
            same = prev[0] == "dense" or (prev[0] == state[0] and prev[1] == state[1])
            rank.write(orig, param.data, j, self._zeros[n] if same else None)
            self._zeros[n] = j
        elif state[0] == "structured":
            bias_keep = mask_from_rank(rank, state[2])
            torch.where(expand_channel_mask(bias_keep, t), orig, orig.new_zeros(()), out=param.data)
            bias_keep = unit_rows(bias_keep, t)  # per row of the bias (all gates or q, k, v of a unit)
            self._zeros[n] = state[2] * t.channel_size
        else:
            if state[0] == "layer":
                apply_rank_mask(rank, state[2], orig, param.data)
                self._zeros[n] = state[2]
            else:
                self._zeros[n] = t.numel - apply_rank_mask(rank, state[2], orig, param.data, count=True)
        for x in self._channel_tensors[n]:
            p, orig = self._extra_params[x], self._extra_originals[x]
            if bias_keep is None:
                p.copy_(orig)
            else:
                torch.where(bias_keep, orig, p.new_zeros(()), out=p.data)
