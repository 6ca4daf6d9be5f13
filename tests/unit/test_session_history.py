"""Reversibility, undo/redo, events."""

import random

import pytest
import torch

from pruneviz.core import CRITERIA, PruningSession, get_criterion


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, snap):
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), k
        assert v.view(-1).view(torch.int32 if v.dtype == torch.float32 else v.dtype).equal(
            snap[k].view(-1).view(torch.int32 if v.dtype == torch.float32 else v.dtype)), k


def random_change(s, rng):
    kind = rng.random()
    if kind < 0.35:
        s.set_global_sparsity(rng.random())
    elif kind < 0.7:
        s.set_sparsity(rng.choice([n for n in s.names if s.supported(n)]), rng.random())
    elif kind < 0.8:
        s.set_scope(rng.choice(["layer", "global", "structured"]))
    elif kind < 0.9:
        s.set_criterion(rng.choice([c for c in CRITERIA if not get_criterion(c).needs_data]))
    elif kind < 0.95:
        s.undo()
    else:
        s.redo()


def test_thousand_random_changes_then_reset_is_bit_identical(tiny_cnn):
    snap = snapshot(tiny_cnn)
    s = PruningSession(tiny_cnn)
    rng = random.Random(0)
    for _ in range(1000):
        random_change(s, rng)
    s.reset()
    assert_bit_identical(tiny_cnn, snap)


def test_resnet18_reset_is_bit_identical(resnet18):
    snap = snapshot(resnet18)
    s = PruningSession(resnet18, scope="global")
    rng = random.Random(1)
    for _ in range(30):
        random_change(s, rng)
    s.reset()
    assert_bit_identical(resnet18, snap)


def test_every_state_is_recomputed_from_the_originals(tiny_cnn):
    """Going 0.9 -> 0.2 must give the same weights as 0 -> 0.2 (no compounding as torch.nn.utils.prune does)."""
    s = PruningSession(tiny_cnn, scope="global")
    s.set_global_sparsity(0.2)
    direct = snapshot(tiny_cnn)
    s.set_global_sparsity(0.9)
    s.set_global_sparsity(0.2)
    assert_bit_identical(tiny_cnn, direct)


def test_undo_redo_walk_the_history_exactly(tiny_cnn):
    s = PruningSession(tiny_cnn)
    states = [snapshot(tiny_cnn)]
    plans = [s.plan]
    rng = random.Random(3)
    for _ in range(25):
        s.set_sparsity(rng.choice(s.names), rng.random())
        states.append(snapshot(tiny_cnn))
        plans.append(s.plan)
    for i in range(len(states) - 2, -1, -1):
        s.undo()
        assert s.plan == plans[i]
        assert_bit_identical(tiny_cnn, states[i])
    assert not s.can_undo and s.undo() is None
    for i in range(1, len(states)):
        s.redo()
        assert_bit_identical(tiny_cnn, states[i])
    assert not s.can_redo and s.redo() is None
    s.undo()
    s.set_global_sparsity(0.1)  # a new change drops the redo tail
    assert not s.can_redo


def test_reset_is_undoable(tiny_cnn):
    s = PruningSession(tiny_cnn, scope="global")
    s.set_global_sparsity(0.7)
    pruned = snapshot(tiny_cnn)
    s.reset()
    assert s.summary().pruned_params == 0
    s.undo()
    assert_bit_identical(tiny_cnn, pruned)


def test_events_name_what_changed(tiny_cnn):
    s = PruningSession(tiny_cnn)
    events = []
    unsubscribe = s.on_change(events.append)
    s.set_sparsity("features.3.weight", 0.5)
    assert events[-1].reason == "set" and events[-1].layers == ("features.3.weight",)
    assert events[-1].generation == s.generation
    s.set_sparsity("features.3.weight", 0.5)  # no-op still reports, with no layer changed
    assert events[-1].layers == ()
    s.undo()
    assert events[-1].reason == "undo"
    unsubscribe()
    s.reset()
    assert events[-1].reason == "undo"


def test_a_broken_listener_does_not_break_the_session(tiny_cnn, caplog):
    s = PruningSession(tiny_cnn)

    def boom(event):
        raise RuntimeError("view bug")

    s.on_change(boom)
    s.set_global_sparsity(0.5)
    assert s.summary().sparsity == pytest.approx(0.5, abs=0.01)
    assert "listener raised" in caplog.text


def test_summary_counts(tiny_cnn):
    s = PruningSession(tiny_cnn, scope="global")
    total = sum(p.numel() for p in tiny_cnn.parameters())
    prunable = sum(t.numel for t in s.targets)
    s.set_global_sparsity(0.5)
    summ = s.summary()
    assert summ.total_params == total and summ.prunable_params == prunable
    assert summ.pruned_params == sum(s.zeros(n) for n in s.names)
    assert summ.compression == pytest.approx(total / (total - summ.pruned_params))
