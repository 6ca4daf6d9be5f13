"""Evaluator: a fixed stratified subset, progressive answers that end exactly at the synchronous value,
honest Wilson intervals, train/eval mode restored, and a clear EvaluationError for every bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruneviz.core import EvaluationError, PruningSession
from pruneviz.core.evaluate import EvalResult, Evaluator, stratified_order, wilson_interval
from pruneviz.data import load_demo_model

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture
def cnn():
    return load_demo_model("cnn")


def small_data(n=100, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


def assert_same(a: EvalResult, b: EvalResult) -> None:
    assert a.n == b.n and a.total == b.total
    assert a.accuracy == b.accuracy
    assert a.accuracy_ci == b.accuracy_ci
    assert a.top5 == b.top5
    assert a.loss == b.loss
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    np.testing.assert_array_equal(a.per_class, b.per_class)


# ----------------------------------------------------------------- progressive == synchronous
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.9])
def test_progressive_run_ends_exactly_at_synchronous_value(cnn, digits, sparsity):
    session = PruningSession(cnn, scope="global")
    session.set_global_sparsity(sparsity)
    ev = Evaluator(cnn, digits, first_chunk=50, chunk_size=70)
    steps = list(ev.run(cnn))
    sync = ev.evaluate(cnn)
    assert [r.n for r in steps] == [b for _, b in ev.bounds] == [50, 120, 190, 260, 330, 360]
    assert [r.final for r in steps] == [False] * 5 + [True]
    assert all(r.total == 360 for r in steps)
    assert_same(steps[-1], sync)
    # every partial answer is the metric of its prefix, and predictions are a growing prefix
    for r in steps:
        assert len(r.predictions) == r.n
        np.testing.assert_array_equal(r.predictions, sync.predictions[: r.n])
        assert r.accuracy == pytest.approx(float((sync.predictions[: r.n] == ev.y[: r.n].numpy()).mean()))
        assert r.confusion.sum() == r.n
    # an independent computation of the final numbers
    with torch.inference_mode():
        out = cnn(ev.x)
    assert sync.accuracy == int((out.argmax(1) == ev.y).sum()) / 360
    assert sync.loss == pytest.approx(float(F.cross_entropy(out, ev.y)), rel=1e-5)
    assert sync.top5 == int((out.topk(5, 1).indices == ev.y[:, None]).any(1).sum()) / 360


def test_same_subset_and_chunks_for_the_same_seed(cnn, digits):
    a = Evaluator(cnn, digits, subset_size=200, seed=3, first_chunk=40, chunk_size=64)
    b = Evaluator(cnn, digits, subset_size=200, seed=3, first_chunk=40, chunk_size=64)
    c = Evaluator(cnn, digits, subset_size=200, seed=4, first_chunk=40, chunk_size=64)
    assert torch.equal(a.order, b.order) and not torch.equal(a.order, c.order)
    assert a.total == 200 and a.bounds[0] == (0, 40) and a.bounds[-1][1] == 200
    assert_same(a.evaluate(cnn), b.evaluate(cnn))


def test_stratified_subset_keeps_class_proportions_in_every_prefix():
    y = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    order = stratified_order(y, 100, seed=0)
    assert len(order) == len(set(order.tolist())) == 100
    counts = torch.bincount(y[order], minlength=3).tolist()
    assert counts == [50, 30, 20]
    for prefix in (10, 20, 50):  # every prefix is close to stratified
        c = torch.bincount(y[order[:prefix]], minlength=3).float() / prefix
        assert torch.allclose(c, torch.tensor([0.5, 0.3, 0.2]), atol=1.5 / prefix + 1e-6)
    assert len(stratified_order(y, None, seed=0)) == 1000


def test_changed_lists_the_samples_whose_prediction_moved(cnn, digits):
    ev = Evaluator(cnn, digits)
    assert ev.baseline.changed is None or len(ev.baseline.changed) == 0
    PruningSession(cnn, scope="global").set_global_sparsity(0.85)
    r = ev.evaluate(cnn)
    expect = np.flatnonzero(r.predictions != ev.baseline.predictions)
    assert len(expect) > 0
    np.testing.assert_array_equal(r.changed, expect)


def test_dataset_and_dataloader_give_the_same_answer_as_tensors(cnn, digits):
    x, y = digits
    a = Evaluator(cnn, (x, y)).baseline
    b = Evaluator(cnn, TensorDataset(x, y)).baseline
    c = Evaluator(cnn, DataLoader(TensorDataset(x, y), batch_size=50)).baseline
    d = Evaluator(cnn, (x.numpy(), y.numpy())).baseline
    for r in (b, c, d):
        assert_same(a, r)


def test_int32_labels_are_accepted(cnn, digits):
    x, y = digits
    assert_same(Evaluator(cnn, (x, y.int())).baseline, Evaluator(cnn, (x, y)).baseline)


# ----------------------------------------------------------------- Wilson intervals
def test_wilson_interval_basics():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(48, 48)[1] == 1.0  # not 0.9999999999999999: the interval must contain p
    for c, n in [(1, 7), (3, 3), (0, 5), (99, 128), (250, 256)]:
        lo, hi = wilson_interval(c, n)
        assert 0.0 <= lo <= c / n <= hi <= 1.0


def test_wilson_interval_of_first_estimate_covers_final_accuracy_seeded_stress(digits):
    """60 seeded cases (random global/layer sparsities, random subsets and first-chunk sizes) on the demo CNN
    and the digits test split: the first estimate's 95 % Wilson interval must contain the final accuracy.
    The nominal rate is 95 %, so we allow misses and require coverage >= 90 % (sampling without replacement
    from the subset makes the true coverage higher than nominal)."""
    rng = random.Random(1234)
    model = load_demo_model("cnn")
    session = PruningSession(model, scope="global")
    cases = hits = 0
    accuracies = []
    for case in range(60):
        if case % 2:
            session.set_global_sparsity(rng.uniform(0.0, 0.97))
        else:
            session.set_sparsities({n: rng.uniform(0.0, 0.95) for n in session.names})
        ev = Evaluator(model, digits, subset_size=rng.choice([None, 300, 240]), seed=case,
                       first_chunk=rng.choice([24, 48, 64, 96]), chunk_size=64)
        first, *_, final = ev.run(model)
        assert not first.final and final.final
        lo, hi = first.accuracy_ci
        assert lo <= first.accuracy <= hi
        cases += 1
        hits += lo <= final.accuracy <= hi
        accuracies.append(final.accuracy)
    assert cases >= 50
    assert max(accuracies) - min(accuracies) > 0.5  # the cases span good and broken models
    print(f"Wilson coverage {hits}/{cases}")
    assert hits / cases >= 0.90, f"coverage {hits}/{cases}"


# ----------------------------------------------------------------- train/eval mode
def test_train_eval_mode_is_restored(cnn, digits):
    cnn.train()
    ev = Evaluator(cnn, digits)
    assert all(m.training for m in cnn.modules())
    r = ev.evaluate(cnn)
    assert all(m.training for m in cnn.modules())
    cnn.eval()
    assert_same(r, ev.evaluate(cnn))  # evaluation ran in eval mode (BatchNorm running stats)
    assert not any(m.training for m in cnn.modules())


def test_mixed_modes_are_restored_exactly(cnn, digits):
    cnn.train()
    for m in cnn.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # frozen BatchNorm, as in fine-tuning
    before = [m.training for m in cnn.modules()]
    ev = Evaluator(cnn, digits)
    ev.evaluate(cnn)
    list(ev.run(cnn))[0]  # a run stopped early restores too
    assert [m.training for m in cnn.modules()] == before


def test_mode_is_restored_when_the_model_raises(digits):
    class Flaky(nn.Module):
        fail = False

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            if self.fail:
                raise RuntimeError("boom")
            return self.lin(x.flatten(1))

    m = Flaky().train()
    ev = Evaluator(m, digits)
    m.fail = True
    with pytest.raises(EvaluationError, match="the model raised during evaluation: RuntimeError: boom"):
        ev.evaluate(m)
    assert m.training and m.lin.training


# ----------------------------------------------------------------- bad input
def test_input_shape_that_does_not_fit_the_model(cnn):
    x = torch.randn(20, 3, 32, 32)
    y = torch.randint(0, 10, (20,))
    with pytest.raises(EvaluationError, match=r"cannot run on the evaluation data \(inputs of shape \(3, 32"):
        Evaluator(cnn, (x, y))


def test_input_dtype_that_does_not_fit_the_model(cnn, digits):
    x, y = digits
    with pytest.raises(EvaluationError, match="dtype torch.float64"):
        Evaluator(cnn, (x.double(), y))
    with pytest.raises(EvaluationError, match="dtype torch.int64"):
        Evaluator(cnn, ((x * 10).long(), y))


@pytest.mark.parametrize(("labels", "span"), [([0, 10], "0 to 10"), ([-1, 3], "-1 to 9")])
def test_labels_outside_the_class_range(cnn, labels, span):
    x, y = small_data(20)
    y[:2] = torch.tensor(labels)
    with pytest.raises(EvaluationError, match=rf"labels range from {span}.*10 classes"):
        Evaluator(cnn, (x, y))


@pytest.mark.parametrize(
    "data",
    [
        (torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)),
        TensorDataset(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)),
        DataLoader(TensorDataset(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)), batch_size=4),
    ],
    ids=["tensors", "dataset", "dataloader"],
)
def test_empty_dataset(cnn, data):
    with pytest.raises(EvaluationError, match="evaluation data is empty"):
        Evaluator(cnn, data)


def test_other_malformed_data(cnn):
    x, y = small_data(20)
    with pytest.raises(EvaluationError, match="20 inputs but 19 targets"):
        Evaluator(cnn, (x, y[:19]))
    with pytest.raises(EvaluationError, match="type dict is not supported"):
        Evaluator(cnn, {"x": x, "y": y})
    with pytest.raises(EvaluationError, match="needs \\(inputs, targets\\) pairs"):
        Evaluator(cnn, DataLoader(x, batch_size=5))
    with pytest.raises(EvaluationError, match="batch dimension"):
        Evaluator(cnn, (x, torch.tensor(3)))
    with pytest.raises(EvaluationError, match="subset_size=0"):
        Evaluator(cnn, (x, y), subset_size=0)
    with pytest.raises(EvaluationError, match="subset_size='all'"):
        Evaluator(cnn, (x, y), subset_size="all")
    with pytest.raises(EvaluationError, match="unknown task 'segmentation'"):
        Evaluator(cnn, (x, y), task="segmentation")


def test_float_labels_for_a_classifier_say_what_to_do(cnn):
    x, y = small_data(20)
    with pytest.raises(EvaluationError, match=r"nothing to measure.*torch.float32.*task='custom'"):
        Evaluator(cnn, (x, y.float()))
    with pytest.raises(EvaluationError, match=r"integer class labels.*y\.long\(\)"):
        Evaluator(cnn, (x, y.float()), task="classification")


def test_model_that_raises_in_forward(cnn, digits):
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("weights on fire")

    with pytest.raises(EvaluationError, match="cannot run on the evaluation.*ValueError: weights on fire"):
        Evaluator(Broken(), digits)


def test_model_with_non_finite_outputs(cnn, digits):
    ev = Evaluator(cnn, digits)
    with torch.no_grad():
        cnn.classifier[2].bias.fill_(float("nan"))
    with pytest.raises(EvaluationError, match="the loss is nan.*not finite"):
        ev.evaluate(cnn)


def test_forward_returning_outputs_of_the_wrong_shape(cnn, digits):
    ev = Evaluator(cnn, digits)
    with pytest.raises(EvaluationError, match=r"outputs of shape \(1, 10\) for 128 samples"):
        ev.evaluate(lambda i, xb: cnn(xb[:1]))
    with pytest.raises(EvaluationError, match="returned tuple, not a tensor"):
        ev.evaluate(lambda i, xb: (cnn(xb),))


def test_custom_metric_that_raises(cnn, digits):
    def metric(out, y):
        raise KeyError("no such thing")

    with pytest.raises(EvaluationError, match="your metric_fn raised KeyError"):
        Evaluator(cnn, digits, metric_fn=metric)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"f1": float("nan")}])
def test_custom_metric_that_returns_nan(cnn, digits, bad):
    with pytest.raises(EvaluationError, match=r"your metric_fn returned \w+=(nan|inf).*finite"):
        Evaluator(cnn, digits, metric_fn=lambda out, y: bad)


def test_custom_metric_that_returns_no_number(cnn, digits):
    with pytest.raises(EvaluationError, match="not a number"):
        Evaluator(cnn, digits, metric_fn=lambda out, y: "great")
    with pytest.raises(EvaluationError, match="not a number"):
        Evaluator(cnn, digits, metric_fn=lambda out, y: out[:3, 0])


def test_loss_fn_that_does_not_fit(cnn, digits):
    def loss(out, y):
        return F.binary_cross_entropy_with_logits(out, y.float())  # (N, 10) vs (N,)

    with pytest.raises(EvaluationError, match=r"loss function raised ValueError on outputs of shape \(128,"):
        Evaluator(cnn, digits, loss_fn=loss)


def test_custom_metric_alongside_classification(cnn, digits):
    ev = Evaluator(cnn, digits, metric_fn=lambda out, y: {"acc2": float((out.argmax(1) == y).float().mean())})
    r = ev.baseline
    assert r.custom["acc2"] == pytest.approx(r.accuracy)


# ----------------------------------------------------------------- regression / custom tasks
def test_regression_with_custom_task_and_metric():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1)).eval()
    x = torch.randn(300, 5)
    y = x[:, :1] * 2 - x[:, 1:2]

    def mae(out, target):
        return {"mae": float((out - target).abs().mean()), "max_err": float((out - target).abs().max())}

    ev = Evaluator(model, (x, y), task="custom", loss_fn=F.mse_loss, metric_fn=mae,
                   first_chunk=64, chunk_size=100)
    steps = list(ev.run(model))
    final = ev.evaluate(model)
    assert final.accuracy is None and final.accuracy_ci is None and final.predictions is None
    assert final.confusion is None and final.top5 is None
    assert [r.n for r in steps] == [64, 164, 264, 300]
    assert steps[-1].custom == final.custom and steps[-1].loss == final.loss
    with torch.inference_mode():
        out = model(ev.x)
    assert final.custom["mae"] == pytest.approx(float((out - ev.y).abs().mean()), rel=1e-6)
    assert final.custom["max_err"] == pytest.approx(float((out - ev.y).abs().max()), rel=1e-6)
    assert final.loss == pytest.approx(float(F.mse_loss(out, ev.y)), rel=1e-5)
    # auto-detection: float targets and a (N, 1) output are not classification; a metric is enough
    auto = Evaluator(model, (x, y), metric_fn=mae)
    assert auto.classification is False and auto.baseline.loss is None
    assert auto.baseline.custom["mae"] == pytest.approx(final.custom["mae"], rel=1e-6)
    # nothing to measure without a metric or a loss
    with pytest.raises(EvaluationError, match="nothing to measure"):
        Evaluator(model, (x, y))
    with pytest.raises(EvaluationError, match="nothing to measure"):
        Evaluator(model, (x, y), task="custom")
