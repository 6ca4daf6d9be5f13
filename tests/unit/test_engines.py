"""The two masking engines give bit-identical weights, masks and counts: "rank" (one rank per weight, every move
rewrites the changed tensors) and "order" (positions in pruning order, a move writes only what changed)."""

from __future__ import annotations

import random

import pytest
import torch

from pruneviz.core import CRITERIA, PrunevizError, PruningSession
from pruneviz.data import load_demo_model


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_order_engine_equals_rank_engine_over_random_moves(criterion, scope, digits):
    x, y = digits
    calib = [(x[:64], y[:64])]
    a = PruningSession(load_demo_model("cnn"), criterion=criterion, scope=scope, calib_data=calib, engine="rank")
    b = PruningSession(load_demo_model("cnn"), criterion=criterion, scope=scope, calib_data=calib, engine="order")
    names = [n for n in a.names if a.supported(n)]
    rng = random.Random(0)
    for i in range(60):
        if i % 3:
            v = rng.choice([rng.uniform(0, 1), 0.0, 1.0, min(1.0, a.plan.global_sparsity + 0.01)])
            a.set_global_sparsity(v)
            b.set_global_sparsity(v)
        else:
            n, v = rng.choice(names), rng.uniform(0, 1)
            a.set_sparsity(n, v)
            b.set_sparsity(n, v)
        if i % 7 == 0:
            a.undo()
            b.undo()
        for n in a.names:
            assert torch.equal(a.model.get_parameter(n), b.model.get_parameter(n)), (i, n)
            assert torch.equal(a.mask(n), b.mask(n)) and a.zeros(n) == b.zeros(n), (i, n)
    b.reset()
    assert all(torch.equal(b.model.get_parameter(n), b.original(n)) for n in b.names)


def test_engine_is_chosen_by_size_and_checked():
    assert PruningSession(load_demo_model("cnn"))._engine == "rank"
    with pytest.raises(PrunevizError, match="engine='fast'"):
        PruningSession(load_demo_model("cnn"), engine="fast")


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("packed", [True, False])
def test_global_order_counts_equal_global_ranks(packed, signed):
    from pruneviz.core.masks import global_ranks
    from pruneviz.core.ranking import GlobalOrder

    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 3000, (300,), generator=g)  # more than 255 tensors: 16-bit owners
    scores = {f"t{i}": (torch.rand(int(n), generator=g) * 50).round() for i, n in enumerate(sizes)}  # many ties
    if signed:  # pinned scores of a rebase can be negative; -0.0 ties with +0.0
        scores = {n: s - 25 for n, s in scores.items()}
        scores["t0"][:5] = -0.0
    order, ranks = GlobalOrder.of(scores, packed=packed), global_ranks(scores)
    total = int(sizes.sum())
    for k in (0, 1, 17, total // 3, total - 1, total):
        counts = order.counts(k)
        for name, rank in ranks.items():
            assert counts[name] == int((rank < k).sum())
            assert torch.equal(order.parts[name].mask(counts[name]), rank >= k)


@pytest.mark.parametrize("signed", [False, True])
def test_rank_of_is_the_stable_argsort(signed):
    # the one-sort keys (score bits, index) give exactly torch's stable order; -0.0 ties with +0.0
    from pruneviz.core.masks import rank_of

    g = torch.Generator().manual_seed(1)
    scores = (torch.rand(20_000, generator=g) * 40).round()
    if signed:
        scores = scores - 20
        scores[::7] = -0.0
    expected = torch.empty(scores.numel(), dtype=torch.int32)
    expected[torch.argsort(scores + 0.0, stable=True)] = torch.arange(scores.numel(), dtype=torch.int32)
    assert torch.equal(rank_of(scores), expected)
