"""Rebasing a session on fine-tuned weights, and undoing it (mixed into :class:`PruningSession`).

After fine-tuning, the kept weights are trained and the pruned ones are zero. A rebase makes those the
session's originals: kept weights take their trained values, pruned ones keep their previous original value
and are *pinned* (ranked below everything by every criterion), so the plan in force gives the same masks,
a higher sparsity prunes further and a lower one revives the old values. The first rebase keeps a snapshot
so ``reset()`` can restore the pretrained model bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from .criteria import channel_view
from .masks import unit_rows

if TYPE_CHECKING:
    from .session import SessionEvent


class RebaseMixin:
    """The rebase part of :class:`~pruneviz.core.session.PruningSession` (it uses the session's state)."""

    @property
    def base_version(self) -> int:
        """Bumped whenever the session's original weights change (rebase, hard reset)."""
        return self._base

    @property
    def rebased(self) -> bool:
        """Whether the original weights are fine-tuned ones (reset then restores the pretrained model)."""
        return self._initial is not None

    def pins(self) -> dict[str, torch.Tensor]:
        """Copies of the masks of the weights pruned at the last rebase (ranked last by every criterion)."""
        return {n: p.clone() for n, p in self._pins.items()}

    def originals_snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of the current original values of every tensor the session changes."""
        with self.lock:
            return {n: t.clone() for n, t in (*self._originals.items(), *self._extra_originals.items())}

    def rebase(self, before: Mapping[str, torch.Tensor] | None = None, reason: str = "finetune") -> SessionEvent:
        """Make the model's current (e.g. fine-tuned) weights the session's starting point.

        Kept weights take their current values; pruned ones keep their previous original value and are
        ranked last by every criterion, so the plan in force gives exactly the current masks, a higher
        sparsity prunes further and a lower one revives the old values. ``before``: the model's
        ``state_dict`` before training, kept (at the first rebase) so :meth:`reset` can restore the
        pretrained model bit for bit.
        """
        with self.lock, torch.no_grad():
            masks = self.masks
            if self._initial is None:
                self._initial = (self.originals_snapshot(),
                                 {k: v.detach().clone() for k, v in before.items()} if before is not None else None)
            new: dict[str, torch.Tensor] = {}
            for t in self.targets:
                keep = masks[t.name]
                new[t.name] = torch.where(keep, self._params[t.name].detach(), self._originals[t.name])
                chan_keep = unit_rows(channel_view(keep, t).any(dim=1), t)
                for x in self._channel_tensors[t.name]:
                    new[x] = torch.where(chan_keep, self._extra_params[x].detach(), self._extra_originals[x])
            pins = {n: ~m for n, m in masks.items() if not bool(m.all())}
            self._set_originals(new, pins)
        return self.apply_plan(self._plan, reason=reason, record=False)

    def restore_originals(self, originals: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor] | None,
                          pins: Mapping[str, torch.Tensor] | None = None, reason: str = "revert") -> SessionEvent:
        """Put back originals (from :meth:`originals_snapshot`), the model's ``state`` and the ``pins``,
        then re-apply the current plan: undoes a :meth:`rebase` exactly."""
        with self.lock, torch.no_grad():
            if state is not None:
                self.model.load_state_dict(state)
            self._set_originals(originals, dict(pins or {}))
            if self._initial is not None and all(
                torch.equal(v, originals[k]) for k, v in self._initial[0].items() if k in originals
            ):
                self._initial = None  # back at the pretrained originals
        return self.apply_plan(self._plan, reason=reason, record=False)

    def _set_originals(self, originals: Mapping[str, torch.Tensor], pins: Mapping[str, torch.Tensor]) -> None:
        for n, t in (*self._originals.items(), *self._extra_originals.items()):
            if n in originals:
                t.copy_(originals[n])
        self._pins = {n: p.clone() for n, p in pins.items()}
        self._base += 1
        self._ctx.cache.clear()  # scores and gradients depend on the originals
        self._rank_key, self._ranks = None, {}
        self._mask_cache.clear()
        self._applied = {n: ("stale",) for n in self._by_name}

    def _pin(self, scores: dict[str, torch.Tensor | None], structured: bool) -> dict[str, torch.Tensor | None]:
        """Rank the weights (channels) pruned at the last rebase below all others, in their own order, so
        the plan in force at a rebase gives exactly the same masks afterwards."""
        if not self._pins:
            return scores
        present = [s for s in scores.values() if s is not None]
        if not present:
            return scores
        span = float(max(s.max() for s in present) - min(s.min() for s in present)) + 1.0
        out = dict(scores)
        for n, s in scores.items():
            pins = self._pins.get(n)
            if s is None or pins is None:
                continue
            if structured:
                t = self._by_name[n]
                pins = channel_view(pins, t).all(dim=1)
            out[n] = torch.where(pins, s - span, s)
        return out

    def _restore_pretrained(self) -> None:
        """Put back the pretrained model kept at the first rebase and start a new history."""
        originals, state = self._initial
        with self.lock, torch.no_grad():
            if state is not None:
                self.model.load_state_dict(state)
            self._set_originals(originals, pins={})
            self._initial = None
            self._history, self._pos = [self._plan], 0
