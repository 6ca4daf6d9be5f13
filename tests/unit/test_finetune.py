"""Fine-tuning with masks held fixed: exact zeros, recovery, cancellation, commit and revert."""

from __future__ import annotations

import threading

import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.errors import PrunevizError
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.finetune import finetune, reapply_masks, rebase_session, revert_finetune
from pruneviz.core.targets import get_tensor
from pruneviz.data import load_demo_model, load_digits_split


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model, snap):
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), k


def assert_pruned_exactly_zero(session):
    for t in session.targets:
        w = get_tensor(session.model, t.name).detach()
        pruned = ~session.mask(t.name)
        assert int(pruned.sum()) == session.zeros(t.name)
        assert (w[pruned].view(torch.int32) == 0).all(), t.name  # +0.0 bit for bit
        keep = session.channel_mask(t.name)
        if keep is not None:  # the removed channels' bias and BatchNorm scale/shift stay 0 too
            for x in session.channel_tensors(t.name):
                assert (get_tensor(session.model, x).detach()[~keep] == 0).all(), x


def pruned_masks(session):
    return {n: m.clone() for n, m in session.masks.items()}


def test_structured_collapse_then_recovery(split):
    model = load_demo_model("cnn")
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    ev = Evaluator(load_demo_model("cnn"), split.test)
    before = ev.baseline.accuracy
    s.set_global_sparsity(0.7)  # 70 % of the channels of every layer but the output layer
    masks, plan = pruned_masks(s), s.plan
    collapsed = ev.evaluate(model).accuracy
    r = finetune(s, split.train, num_threads=1, epochs=3, lr=1e-3, eval_data=split.val)
    recovered = ev.evaluate(model).accuracy
    assert before > 0.97 and collapsed < 0.4 and recovered > 0.85 and recovered > collapsed + 0.45
    assert r.epochs_done == 3 and r.steps_done == r.total_steps == 3 * 17 and not r.cancelled and r.committed
    assert r.initial.eval_accuracy < 0.4 and r.accuracy > 0.85
    assert [h.epoch for h in r.history] == [1, 2, 3] and r.history[-1].train_loss < r.history[0].train_loss
    assert not model.training  # eval mode restored
    assert s.plan == plan and all(torch.equal(s.mask(n), masks[n]) for n in s.names)
    assert_pruned_exactly_zero(s)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "factory"])
def test_pruned_weights_stay_exactly_zero(split, optimizer):
    model = load_demo_model("mlp").train()
    s = PruningSession(model, scope="global")
    s.set_global_sparsity(0.9)
    opt = (lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)) if optimizer == "factory" else optimizer
    r = finetune(s, split.train.tensors, epochs=1, lr=1e-2, optimizer=opt, weight_decay=0.01, batch_size=128)
    assert r.steps_done == 9 and model.training  # train mode restored too
    assert_pruned_exactly_zero(s)
    assert s.summary().pruned_params == round(0.9 * s.summary().prunable_params)


def test_cancel_mid_epoch_leaves_consistent_recorded_model(split):
    model = load_demo_model("cnn")
    s = PruningSession(model, scope="layer")
    s.set_global_sparsity(0.8)
    steps = []

    def progress(done, total, info):
        steps.append((done, total, info["eta"]))

    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 5

    r = finetune(s, split.train, num_threads=1, epochs=2, progress=progress, cancel=cancel, eval_data=split.val)
    assert r.cancelled and r.stopped_reason == "cancelled" and r.steps_done == 5 and r.epochs_done == 0
    assert len(r.history) == 1 and not r.history[0].complete and r.history[0].steps == 5
    assert r.history[0].eval_accuracy is not None  # the partly trained model was evaluated
    assert [d for d, _, _ in steps] == [1, 2, 3, 4, 5] and steps[0][1] == 34 and steps[-1][2] > 0
    assert r.committed and not model.training
    assert_pruned_exactly_zero(s)
    event = threading.Event()
    event.set()
    r = finetune(s, split.train, num_threads=1, epochs=1, cancel=event)
    assert r.cancelled and r.steps_done == 0 and not r.committed


def test_commit_makes_finetuned_weights_the_starting_point(split):
    model = load_demo_model("cnn")
    pristine = snapshot(model)
    s = PruningSession(model, scope="global")
    s.set_global_sparsity(0.5)
    old = pruned_masks(s)
    finetune(s, split.train, num_threads=1, epochs=1)
    assert s.rebased
    trained = snapshot(model)
    assert not torch.equal(trained["classifier.0.weight"], load_demo_model("cnn").state_dict()["classifier.0.weight"])
    # the rebase re-applied the same plan: same masks, same (trained) weights
    assert all(torch.equal(s.mask(n), old[n]) for n in s.names)
    assert_state_equal(model, trained)
    # new originals: trained where kept, the pretrained value where pruned (revived by a lower sparsity)
    for n in s.names:
        keep = s.mask(n)
        assert torch.equal(s.original(n)[keep], trained[n][keep])
        assert torch.equal(s.original(n)[~keep], pristine[n][~keep])
    # pruning further starts from the fine-tuned weights: masks are nested
    s.set_global_sparsity(0.8)
    for n in s.names:
        assert not (~old[n] & s.mask(n)).any(), n  # nothing pruned before is kept now
        w = get_tensor(model, n).detach()
        assert torch.equal(w[s.mask(n)], trained[n][s.mask(n)])
    assert s.summary().pruned_params == round(0.8 * s.summary().prunable_params)
    assert_pruned_exactly_zero(s)
    s.set_global_sparsity(0.5)  # back to the rebased plan: exactly the fine-tuned model
    assert_state_equal(model, trained)
    s.reset()  # a rebased session's reset restores the pretrained model, bit for bit
    assert_state_equal(model, pristine)
    assert not s.rebased


def test_revert_then_reset_is_bit_identical_to_pretrained(split):
    model = load_demo_model("cnn")
    pristine = snapshot(model)
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    pruned = snapshot(model)
    r = finetune(s, split.train, num_threads=1, epochs=1)
    s.set_global_sparsity(0.6)  # a later change on top of the fine-tuned weights
    revert_finetune(s, r)
    assert s.plan.global_sparsity == 0.6  # the current plan, re-applied to the pre-fine-tune weights
    s.set_global_sparsity(0.5)
    assert_state_equal(model, pruned)  # BatchNorm statistics included
    s.reset()
    assert_state_equal(model, pristine)


def test_commit_false_keeps_originals(split):
    model = load_demo_model("cnn")
    pristine = snapshot(model)
    s = PruningSession(model)
    s.set_global_sparsity(0.5)
    r = finetune(s, split.train, num_threads=1, epochs=1, commit=False)
    assert not r.committed and all(torch.equal(s.original(n), pristine[n]) for n in s.names)
    assert not torch.equal(model.state_dict()["features.1.running_mean"], pristine["features.1.running_mean"])
    assert_pruned_exactly_zero(s)
    revert_finetune(s, r)
    s.reset()
    assert_state_equal(model, pristine)


def test_error_restores_the_model(split):
    model = load_demo_model("cnn")
    s = PruningSession(model)
    s.set_global_sparsity(0.5)
    before = snapshot(model)
    calls = {"n": 0}

    def bad_loss(out, y):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return torch.nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        finetune(s, split.train, num_threads=1, epochs=1, loss_fn=bad_loss)
    assert_state_equal(model, before)
    assert not model.training


def test_plan_change_during_finetune_stops_it(split):
    s = PruningSession(load_demo_model("cnn"))
    s.set_global_sparsity(0.5)

    def progress(done, total, info):
        if done == 2:
            s.set_global_sparsity(0.6)  # e.g. a slider moved from the UI thread

    r = finetune(s, split.train, num_threads=1, epochs=1, progress=progress)
    assert r.cancelled and "plan changed" in r.stopped_reason and r.steps_done == 2
    assert_pruned_exactly_zero(s)


def test_bad_arguments(split):
    s = PruningSession(load_demo_model("cnn"))
    with pytest.raises(PrunevizError):
        finetune(s, split.train, num_threads=1, optimizer="lbfgs")
    with pytest.raises(PrunevizError):
        finetune(s, split.train, num_threads=1, lr=-1)
    with pytest.raises(PrunevizError):
        finetune(s, split.train, num_threads=1, epochs=-1)
    with pytest.raises(PrunevizError):
        finetune(s, [1, 2, 3])
    with pytest.raises(PrunevizError):
        finetune(s, split.train, num_threads=1, batch_size=0)


def test_helpers_rezero_and_rebase():
    model = load_demo_model("mlp")
    s = PruningSession(model, scope="layer")
    s.set_global_sparsity(0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    reapply_masks(s)
    assert_pruned_exactly_zero(s)
    rebase_session(s)
    for n in s.names:
        keep = s.mask(n)
        assert torch.equal(s.original(n)[keep], get_tensor(model, n)[keep])


def test_live_evaluator_follows_a_finetune(split):
    from pruneviz.core.evaluate import Evaluator
    from pruneviz.core.live import LiveEvaluator
    from pruneviz.data import digits_tensors

    model = load_demo_model("cnn")
    s = PruningSession(model, scope="structured", criterion="l1_filter")
    data = digits_tensors("test")
    live = LiveEvaluator(s, data)
    try:
        s.set_global_sparsity(0.6)
        assert live.wait_idle(30)
        collapsed = live.latest_final.accuracy
        finetune(s, split.train, num_threads=1, epochs=2)
        assert live.wait_idle(30)
        fresh = Evaluator(model, data).evaluate(model)
        assert live.latest_final.accuracy == fresh.accuracy > collapsed
    finally:
        live.close()


@pytest.mark.parametrize("criterion", ["random", "magnitude", "bn_scale"])
def test_rebase_keeps_masks_for_every_criterion_and_nests_further_pruning(split, criterion):
    model = load_demo_model("cnn")
    scope = "structured" if criterion == "bn_scale" else "layer"
    s = PruningSession(model, criterion=criterion, scope=scope)
    s.set_global_sparsity(0.5)
    old = pruned_masks(s)
    finetune(s, split.train, num_threads=1, epochs=1)
    assert all(torch.equal(s.mask(n), old[n]) for n in s.names)
    s.set_global_sparsity(0.7)
    for n in s.names:
        assert not (~old[n] & s.mask(n)).any(), n
