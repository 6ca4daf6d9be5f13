"""Pruning schedules: the sparsity sequences, exact targets, the drop-and-recover records, cancellation."""

from __future__ import annotations

import math

import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.errors import PrunevizError
from pruneviz.core.masks import n_pruned
from pruneviz.core.schedules import SCHEDULES, run_schedule, schedule_sparsities
from pruneviz.core.targets import get_tensor
from pruneviz.data import load_demo_model, load_digits_split


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def small(split, n=256):
    x, y = split.train.tensors
    return x[:n], y[:n]


def actual_zeros(session, name):
    return int((get_tensor(session.model, name).detach() == 0).sum())


def test_schedule_sparsities():
    assert schedule_sparsities(0.9, 5, "oneshot") == [0.9]
    eq = schedule_sparsities(0.9, 3, "equal", initial=0.3)
    assert eq == pytest.approx([0.5, 0.7, 0.9]) and eq[-1] == 0.9
    cubic = schedule_sparsities(0.9, 4, "cubic")
    expected = [0.9 + (0.0 - 0.9) * (1 - t / 4) ** 3 for t in range(1, 5)]  # Zhu & Gupta 2017
    assert cubic == pytest.approx(expected) and cubic[-1] == 0.9
    assert all(a < b for a, b in zip(cubic, cubic[1:], strict=False))
    # cubic front-loads the pruning: its first step is the biggest
    assert cubic[0] > cubic[1] - cubic[0] > cubic[2] - cubic[1] > cubic[3] - cubic[2]
    for kind in SCHEDULES:
        for target in (0.0, 0.37, 1.0):
            assert schedule_sparsities(target, 7, kind, initial=0.1 if target else 0.0)[-1] == target
    with pytest.raises(PrunevizError):
        schedule_sparsities(0.9, 0, "cubic")
    with pytest.raises(PrunevizError):
        schedule_sparsities(0.9, 3, "linear")
    with pytest.raises(PrunevizError):
        schedule_sparsities(1.2, 3, "cubic")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("scope", ["global", "layer", "structured"])
def test_reaches_target_exactly(split, schedule, scope):
    s = PruningSession(load_demo_model("cnn"), scope=scope,
                       criterion="l1_filter" if scope == "structured" else "magnitude")
    target = 0.6 if scope == "structured" else 0.87
    r = run_schedule(s, target, schedule, steps=3, train_data=small(split), epochs_per_step=1, num_threads=1)
    assert not r.cancelled and r.sparsities[-1] == target
    if scope == "global":
        assert s.summary().pruned_params == n_pruned(target, s.summary().prunable_params)
        assert s.summary().sparsity == pytest.approx(target, abs=1e-4)
    for t in s.targets:
        if scope == "layer":
            expected = n_pruned(target, t.numel)
        elif scope == "structured":
            expected = 0 if t.name == s.output_layer else n_pruned(target, t.channels) * t.channel_size
        else:
            expected = s.zeros(t.name)
        assert s.zeros(t.name) == expected, t.name
        assert actual_zeros(s, t.name) == expected, t.name  # the weights agree with the bookkeeping
    assert sum(s.zeros(n) for n in s.names) == s.summary().pruned_params
    n_steps = 1 if schedule == "oneshot" else 3
    assert [(x.step, x.phase) for x in r.records] == [(0, "start")] + [
        (i, p) for i in range(1, n_steps + 1) for p in ("prune", "finetune")]


def test_records_show_drop_and_recovery(split, tmp_path):
    s = PruningSession(load_demo_model("cnn"), criterion="l1_filter", scope="structured")
    calls = []
    r = run_schedule(s, 0.7, "cubic", steps=2, train_data=split.train, eval_data=split.val, epochs_per_step=2,
                     progress=lambda d, t, i: calls.append((d, t, i["phase"])), num_threads=1)
    assert r.records[0].phase == "start" and r.records[0].accuracy > 0.97 and r.records[0].sparsity == 0.0
    prunes = [x for x in r.records if x.phase == "prune"]
    tunes = [x for x in r.records if x.phase == "finetune"]
    assert [x.target for x in prunes] == pytest.approx(schedule_sparsities(0.7, 2, "cubic"))
    assert all(t.accuracy > p.accuracy for p, t in zip(prunes, tunes, strict=True))  # every fine-tune recovers
    assert r.final_accuracy > 0.85 and r.steps_done == 2 and len(r.finetunes) == 2
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls) and calls[-1][0] == calls[-1][1]
    assert {p for _, _, p in calls} == {"prune", "finetune"}
    labels, acc = r.curve()
    assert labels[0] == "0 start" and len(acc) == 5
    with open(r.to_csv(tmp_path / "schedule.csv")) as f:
        assert f.readline().startswith("step,phase,sparsity")


def test_cancel_leaves_consistent_session(split):
    s = PruningSession(load_demo_model("cnn"), scope="global")
    seen = []

    def progress(done, total, info):
        seen.append(info)

    def cancel():
        return any(i["phase"] == "finetune" and i.get("step") == 2 for i in seen)

    r = run_schedule(s, 0.9, "equal", steps=4, train_data=small(split), progress=progress, cancel=cancel,
                     num_threads=1)
    assert r.cancelled and r.records[-1].step == 2
    assert r.records[-1].phase == "finetune" and r.finetunes[-1].cancelled
    assert math.isclose(s.plan.global_sparsity, 0.45)
    for n in s.names:
        assert actual_zeros(s, n) == s.zeros(n)
        assert (get_tensor(s.model, n).detach()[~s.mask(n)] == 0).all()


def test_revert_schedule_then_reset_is_bit_identical(split):
    model = load_demo_model("cnn")
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    s = PruningSession(model, scope="layer")
    r = run_schedule(s, 0.8, "cubic", steps=2, train_data=small(split), num_threads=1)
    r.revert(s)
    s.reset()
    for k, v in model.state_dict().items():
        assert torch.equal(v, pristine[k]), k


def test_explicit_schedule_and_errors(split):
    s = PruningSession(load_demo_model("mlp"), scope="global")
    r = run_schedule(s, 0.5, [0.2, 0.5], train_data=small(split), epochs_per_step=0)
    assert r.schedule == "custom" and [x.phase for x in r.records] == ["start", "prune", "prune"]
    assert s.summary().pruned_params == n_pruned(0.5, s.summary().prunable_params)
    with pytest.raises(PrunevizError):
        run_schedule(s, 0.5, [0.2, 0.4], train_data=small(split))
    with pytest.raises(PrunevizError):
        run_schedule(s, 0.5, "cubic")
    with pytest.raises(PrunevizError):
        run_schedule(s, 0.5, "cubic", train_data=small(split), epochs_per_step=-1)
