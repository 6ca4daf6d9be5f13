"""Pruning order for big models: each tensor's weight positions, lowest score first, so a slider move writes
only the weights whose fate changed.

The default engine (:mod:`pruneviz.core.masks`) keeps one int32 rank per weight and rewrites every weight of a
changed tensor from its original on each move: one compare per weight, ~6 ms for ResNet-18's 11.7 M weights,
but ~300 ms for ViT-B/16's 86 M (five passes over 350 MB). Here a tensor keeps its positions in pruning order
instead (the same 4 bytes per weight); pruning ``j`` weights means "the first ``j`` positions", and a move
from ``j0`` to ``j1`` zeroes (or restores from the originals) only the positions between them. A 1 % step on
ViT-B/16 touches 0.9 M weights instead of 86 M.

Global scope ranks every weight of the model at once: the global order is kept as, per tensor, its positions in
global order, plus the owner (tensor index, one byte) of each global rank and a table of cumulative counts per
owner every ``BUCKET`` ranks, so "how many of this tensor's weights fall below global rank k" is a table look-up
and a count over at most ``BUCKET`` owners. Memory: the positions (1x the weights' bytes) and the owners (0.25x,
0.5x with more than 255 tensors), against the default engine's ranks (1x).
"""

from __future__ import annotations

import numpy as np
import torch

#: global ranks per row of the cumulative-count table
BUCKET = 1 << 16


def _order_of(flat: torch.Tensor) -> np.ndarray:
    """Positions of ``flat`` in ascending score order (stable), as uint32."""
    if flat.dtype == torch.float32 and 0 < flat.numel() < 2**32:
        from .radix import order_f32  # numba: loaded by the big models that use it, not by every import

        return order_f32(flat.detach().contiguous().numpy())
    return torch.argsort(flat, stable=True).numpy().astype(np.uint32)


class Ordered:
    """One tensor's positions in pruning order; ``j`` pruned = the first ``j`` positions."""

    def __init__(self, order: np.ndarray, shape: tuple[int, ...]) -> None:
        self.order = torch.from_numpy(order.view(np.int32))  # positions < 2**31: int32 holds them
        self.shape = tuple(shape)
        self.owner: GlobalOrder | None = None  # the global order this tensor's positions belong to
        self.numel = int(np.prod(shape)) if shape else 1

    @classmethod
    def of(cls, scores: torch.Tensor) -> Ordered:
        return cls(_order_of(scores.reshape(-1)), tuple(scores.shape))

    def mask(self, j: int) -> torch.Tensor:
        """Keep-mask (True = kept) with the first ``j`` positions pruned."""
        keep = torch.ones(self.numel, dtype=torch.bool)
        if j:
            keep[self.order[:j].long()] = False
        return keep.view(self.shape)

    def write(self, original: torch.Tensor, out: torch.Tensor, j: int, prev: int | None) -> None:
        """Make ``out`` equal ``original`` with the first ``j`` positions zeroed. ``prev``: how many are zeroed in
        ``out`` now (with this order), so only the positions between ``prev`` and ``j`` are written; None: all."""
        o, flat = original.reshape(-1), out.view(-1)
        # scattered writes cost ~4x a sequential copy per weight; restoring reads the originals too
        delta = (j - prev) if prev is not None and j >= prev else 2 * (prev - j) if prev is not None else None
        if delta is None or delta > self.numel // 4 + j:  # a big jump: copy it all, then zero the first j
            flat.copy_(o)
            prev = 0
        if j > prev:
            flat.index_fill_(0, self.order[prev:j].long(), 0.0)
        elif j < prev:
            idx = self.order[j:prev].long()
            flat.index_copy_(0, idx, o.index_select(0, idx))


class GlobalOrder:
    """Every tensor's :class:`Ordered` positions in the one global order, and how many fall below rank ``k``."""

    def __init__(self, names: list[str], parts: dict[str, Ordered], owner: np.ndarray, table: np.ndarray) -> None:
        self.names = names
        self.parts = parts
        self.owner = owner  # (N,) tensor index of each global rank
        self.table = table  # (N // BUCKET + 1, T) cumulative counts per tensor at each bucket start

    @classmethod
    def of(cls, scores: dict[str, torch.Tensor], packed: bool | None = None) -> GlobalOrder:
        """The global order of ``scores``; ``packed`` (default: when it fits) chooses the one-sort path."""
        names = list(scores)
        sizes = np.array([scores[n].numel() for n in names], dtype=np.int64)
        kind = np.uint8 if len(names) < 256 else np.uint16
        tid_bits = max(1, (len(names) - 1).bit_length())
        fits = sizes.max() < 2 ** (32 - tid_bits) and len(names) < 2**16
        if fits if packed is None else packed and fits:
            # one radix sort of all the scores, each carrying (tensor, position): the owner of every global rank
            # and each tensor's positions in global order (its own stable order) come out of it in one pass
            from .radix import global_order_f32

            owner, orders = global_order_f32(
                [scores[n].detach().reshape(-1).float().contiguous().numpy() for n in names], tid_bits)
            parts = {n: Ordered(o, tuple(scores[n].shape)) for n, o in zip(names, orders, strict=True)}
        else:  # many tensors or a huge one: positions from the one global sort
            flat = torch.cat([scores[n].reshape(-1).float() for n in names])
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            pos = _order_of(flat)
            del flat
            owner = np.repeat(np.arange(len(names), dtype=kind), sizes)[pos]
            local = pos[np.argsort(owner, kind="stable")]
            del pos
            parts = {}
            for i, n in enumerate(names):
                part = local[offsets[i]:offsets[i + 1]]
                part -= np.uint32(offsets[i])
                parts[n] = Ordered(part, tuple(scores[n].shape))
        starts = np.arange(0, len(owner) + 1, BUCKET)
        counts = np.zeros((len(starts), len(names)), dtype=np.int64)
        for b in range(1, len(starts)):
            counts[b] = counts[b - 1] + np.bincount(owner[starts[b - 1]:starts[b]], minlength=len(names))
        out = cls(names, parts, owner, counts)
        for part in parts.values():
            part.owner = out
        return out

    def counts(self, k: int) -> dict[str, int]:
        """Per tensor, how many of its weights have a global rank below ``k`` (the ones ``k`` prunes)."""
        b = k // BUCKET
        c = self.table[b] + np.bincount(self.owner[b * BUCKET:k], minlength=len(self.names))
        return {n: int(c[i]) for i, n in enumerate(self.names)}
