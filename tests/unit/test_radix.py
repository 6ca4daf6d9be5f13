"""The big-model engine's radix sorts equal numpy's stable argsort: ties, signs, -0.0, many tensors, both cores."""

import numpy as np
import pytest

from pruneviz.core.radix import global_order_f32, order_f32


def _scores(rng: np.random.Generator, sizes: list[int], kind: str) -> list[np.ndarray]:
    out = []
    for n in sizes:
        if kind == "ties":  # few distinct values: most keys tie, so the order is the tie-break's
            s = rng.integers(0, 5, n).astype(np.float32) / 4
        elif kind == "signed":
            s = rng.standard_normal(n).astype(np.float32)
            s[rng.integers(0, n, max(1, n // 50))] = -0.0
            s[rng.integers(0, n, max(1, n // 50))] = 0.0
        else:  # magnitudes over many decades: every top-16-bit bucket size, big and small
            s = np.abs(rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 3, n)).astype(np.float32)
        out.append(s)
    return out


def _reference(scores: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    flat = np.concatenate(scores).astype(np.float64)  # -0.0 == 0.0 in a float sort: they tie
    pos = np.argsort(flat, kind="stable")
    offsets = np.concatenate([[0], np.cumsum([s.size for s in scores])])
    owner = np.searchsorted(offsets, pos, side="right") - 1
    parts = [pos[owner == t] - offsets[t] for t in range(len(scores))]
    return owner, parts


@pytest.mark.parametrize("kind", ["ties", "signed", "spread"])
@pytest.mark.parametrize("sizes", [[7, 1, 300], [700_000, 500_000, 3], [5] * 300])
def test_global_order_is_the_stable_argsort_of_the_concatenation(kind, sizes):
    """Two workers (over 2**20 keys), one (small), and the shared-histogram path (over 256 tensors)."""
    scores = _scores(np.random.default_rng(len(sizes) + sum(sizes)), sizes, kind)
    owner, parts = global_order_f32(scores, max(1, (len(scores) - 1).bit_length()))
    want_owner, want_parts = _reference(scores)
    assert np.array_equal(owner, want_owner)
    for got, want in zip(parts, want_parts, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("kind", ["ties", "signed", "spread"])
@pytest.mark.parametrize("n", [1, 31, 100_003])
def test_order_is_the_stable_argsort(kind, n):
    (s,) = _scores(np.random.default_rng(n), [n], kind)
    assert np.array_equal(order_f32(s), np.argsort(s.astype(np.float64), kind="stable"))


def test_constant_scores_keep_positions_in_order():
    """Every pass skipped (one digit everywhere): the order is the identity."""
    s = np.full(1000, 0.25, dtype=np.float32)
    assert np.array_equal(order_f32(s), np.arange(1000))
    owner, parts = global_order_f32([s, s], 1)
    assert np.array_equal(owner, np.repeat([0, 1], 1000)) and all(np.array_equal(p, np.arange(1000)) for p in parts)
