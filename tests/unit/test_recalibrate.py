"""BatchNorm re-calibration: recovers accuracy after structured pruning, and is undone bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.recalibrate import (
    RecalibrationError,
    StaleRecalibrationError,
    active_recalibration,
    batchnorms,
    recalibrate_batchnorm,
    recalibration_batches,
    revert_recalibration,
)
from pruneviz.data import load_demo_model
from pruneviz.data.demos import DEMOS

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def cnn_data():
    return DEMOS["cnn"].data()


@pytest.fixture
def pruned(cnn_data):
    """The demo CNN at structured 50 % (with its calibration batches), its evaluator and its pristine state."""
    data, calib = cnn_data
    model = load_demo_model("cnn")
    pristine = copy.deepcopy(model.state_dict())
    s = PruningSession(model, criterion="l1_filter", scope="structured", calib_data=calib)
    s.set_global_sparsity(0.5)
    return s, Evaluator(model, data), pristine


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recovers_accuracy_and_changes_only_batchnorm_statistics(pruned):
    s, ev, _ = pruned
    before = _state(s.model)
    calls = []
    r = recalibrate_batchnorm(s, recalibration_batches(s)[0], evaluator=ev, on_change=calls.append)
    assert r.metric_after.value > r.metric_before.value + 0.10  # measured: 18.3 % -> 34.2 %
    assert r.layers == batchnorms(s.model) == ["features.1", "features.4", "features.8"]
    assert r.batches == 4 and r.samples == 256 and calls == [r] and r.active and active_recalibration(s) is r
    now = s.model.state_dict()
    for k, v in now.items():
        stat = k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(v, before[k]) != stat, k  # every statistic changed, nothing else did
    assert ev.evaluate(s.model).value == pytest.approx(r.metric_after.value)  # the session's model has them
    revert_recalibration(s, r)
    assert _equal(_state(s.model), before) and r.state == "reverted" and calls == [r, r]
    assert active_recalibration(s) is None
    with pytest.raises(RecalibrationError, match="no longer in force"):
        revert_recalibration(s, r)


def test_reset_gives_back_the_original_model_bit_for_bit(pruned):
    s, _, pristine = pruned
    r = recalibrate_batchnorm(s, recalibration_batches(s)[0], sticky=True)
    s.set_global_sparsity(0.6)  # sticky: survives a new sparsity ...
    assert r.active
    s.reset()  # ... but not a reset
    assert r.state == "reverted" and "reset" in r.reverted_by
    assert _equal(_state(s.model), pristine)


def test_any_change_of_the_plan_puts_the_statistics_back(pruned):
    s, _, _ = pruned
    before = _state(s.model)
    r = recalibrate_batchnorm(s, recalibration_batches(s)[0])
    s.set_global_sparsity(0.6)
    assert r.state == "reverted" and "sparsity" in r.reverted_by
    s.undo()
    assert _equal(_state(s.model), before)  # the plan of the re-calibration, with its original statistics


def test_a_second_recalibration_undoes_to_the_first_ones_original(pruned):
    s, _, _ = pruned
    before = _state(s.model)
    batches = recalibration_batches(s)[0]
    first = recalibrate_batchnorm(s, batches[:2])
    second = recalibrate_batchnorm(s, batches)
    assert first.state == "replaced" and second.active
    revert_recalibration(s, second)
    assert _equal(_state(s.model), before)


def test_statistics_changed_elsewhere_are_left_alone(pruned):
    s, _, _ = pruned
    r = recalibrate_batchnorm(s, recalibration_batches(s)[0])
    with torch.no_grad():
        s.model.features[1].running_mean.add_(1.0)  # e.g. a fine-tune in train mode
    touched = _state(s.model)
    with pytest.raises(RecalibrationError, match="changed since"):
        revert_recalibration(s, r)
    assert r.state == "obsolete" and _equal(_state(s.model), touched)
    s.set_global_sparsity(0.6)  # no listener any more: the change does not write old statistics
    assert torch.equal(s.model.features[1].running_mean, touched["features.1.running_mean"])


def test_a_plan_change_while_recalibrating_drops_the_result(pruned):
    s, _, _ = pruned
    before = _state(s.model)

    def forward(model, x):  # someone moves the slider while the batches run
        if s.plan.global_sparsity == 0.5:
            s.set_global_sparsity(0.4)
        return model(x)

    with pytest.raises(StaleRecalibrationError, match="plan changed"):
        recalibrate_batchnorm(s, recalibration_batches(s)[0], forward_fn=forward)
    s.set_global_sparsity(0.5)
    assert _equal(_state(s.model), before) and active_recalibration(s) is None


def test_refusals_change_nothing(pruned, cnn_data):
    s, _, _ = pruned
    before = _state(s.model)
    with pytest.raises(RecalibrationError, match="failed.*Nothing was changed"):
        recalibrate_batchnorm(s, [torch.randn(4, 3, 8, 8)])  # three channels: not the digits' one
    with pytest.raises(RecalibrationError, match="max_batches"):
        recalibrate_batchnorm(s, [torch.randn(4, 1, 8, 8)], max_batches=0)
    assert _equal(_state(s.model), before)
    mlp = PruningSession(load_demo_model("mlp"), scope="structured")
    with pytest.raises(RecalibrationError, match="no BatchNorm"):
        recalibrate_batchnorm(mlp, [torch.randn(4, 1, 8, 8)])


def test_which_data(pruned, cnn_data):
    s, ev, _ = pruned
    batches, what = recalibration_batches(s, ev.x)
    assert what == "calibration data" and len(batches) == 4 and batches[0].shape == (64, 1, 8, 8)
    bare = PruningSession(load_demo_model("cnn"), scope="structured")
    batches, what = recalibration_batches(bare, ev.x, batch_size=100, max_batches=2)
    assert what == "evaluation data" and [len(b) for b in batches] == [100, 100]
    with pytest.raises(RecalibrationError, match="no data"):
        recalibration_batches(bare)
    r = recalibrate_batchnorm(bare, ev.x, max_batches=3)  # a bare input tensor is cut into batches of 64
    assert r.batches == 3 and r.samples == 192


@pytest.mark.slow
def test_detector_map_recovers():
    data, calib = DEMOS["detector"].data()
    model = load_demo_model("detector")
    s = PruningSession(model, scope="structured", criterion="l1_filter", calib_data=calib)
    ev = Evaluator(model, data)
    s.set_global_sparsity(0.25)
    r = recalibrate_batchnorm(s, recalibration_batches(s)[0], evaluator=ev)
    assert r.metric_after.value > r.metric_before.value + 0.05  # measured: mAP@0.5 0.116 -> 0.223
