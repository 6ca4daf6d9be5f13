"""Sensitivity sweeps: the table, its helpers, executors (inline / process pool / Dask), cancellation."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.errors import PrunevizError, UnknownLayerError
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.sensitivity import SensitivityResult, SensitivityRow, sensitivity_sweep
from pruneviz.data import digits_tensors, load_demo_model

LEVELS = (0.2, 0.5, 0.8)


@pytest.fixture(scope="module")
def test_data():
    return digits_tensors("test")


@pytest.fixture
def cnn_session():
    return PruningSession(load_demo_model("cnn"), criterion="magnitude", scope="layer")


def state_of(session):
    return session.plan, {k: v.clone() for k, v in session.model.state_dict().items()}


def assert_unchanged(session, before):
    plan, state = before
    assert session.plan == plan
    for k, v in session.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_inline_table(cnn_session, test_data):
    before = state_of(cnn_session)
    r = sensitivity_sweep(cnn_session, test_data, levels=LEVELS, executor="inline")
    assert r.complete and not r.cancelled and r.skipped == {}
    assert r.layers == tuple(cnn_session.names)
    assert [(row.layer, row.sparsity) for row in r.rows] == [(n, v) for n in cnn_session.names for v in LEVELS]
    assert r.baseline == pytest.approx(Evaluator(load_demo_model("cnn"), test_data).baseline.accuracy)
    for row in r.rows:
        assert row.delta == row.metric - r.baseline
        assert row.accuracy == row.metric
        assert row.pruned == round(row.sparsity * row.size)
        assert row.size == cnn_session.target(row.layer).numel
    layers, levels, mat = r.pivot()
    assert layers == cnn_session.names and levels == list(LEVELS) and mat.shape == (5, 3)
    assert not np.isnan(mat).any()
    # 80 % of the first conv's 144 weights hurts more than 20 %
    assert mat[0, 2] < mat[0, 0]
    assert_unchanged(cnn_session, before)


@pytest.mark.parametrize("criterion", ["magnitude", "random", "l1_filter"])
def test_rows_match_pruning_by_hand(test_data, criterion):
    s = PruningSession(load_demo_model("cnn"), criterion=criterion, seed=3)
    r = sensitivity_sweep(s, test_data, levels=(0.6,), layers=["features.3.weight", "classifier.0.weight"],
                          executor="inline", evaluator_kwargs={"chunk_size": 100, "first_chunk": 100})
    for row in r.rows:
        model = load_demo_model("cnn")
        by_hand = PruningSession(model, criterion=criterion, seed=3)
        by_hand.set_sparsity(row.layer, 0.6)
        assert torch.equal(by_hand.mask(row.layer).sum(), torch.tensor(row.size - row.pruned))
        res = Evaluator(model, test_data, chunk_size=100, first_chunk=100).baseline
        assert row.accuracy == res.accuracy and row.loss == pytest.approx(res.loss, rel=1e-6)


def test_pivot_suggest_and_csv(tmp_path):
    rows = [SensitivityRow("a", v, m, m - 0.9, m, 1.0, 0, 10) for v, m in ((0.1, 0.9), (0.5, 0.895), (0.9, 0.5))]
    rows += [SensitivityRow("b", v, m, m - 0.9, m, 1.0, 0, 10) for v, m in ((0.1, 0.85), (0.5, 0.9), (0.9, 0.9))]
    rows += [SensitivityRow("c", v, m, m - 0.9, m, 1.0, 0, 10) for v, m in ((0.1, 0.9), (0.5, 0.7), (0.9, 0.9))]
    r = SensitivityResult(rows, "accuracy", 0.9, (0.1, 0.5, 0.9), ("a", "b", "c", "d"), "magnitude", "layer",
                          skipped={"d": "criterion cannot score d"})
    # highest level such that it and every lower level stay within the drop; a noisy recovery does not count
    assert r.suggest(0.01) == {"a": 0.5, "b": 0.0, "c": 0.1, "d": 0.0}
    assert r.suggest(0.0) == {"a": 0.1, "b": 0.0, "c": 0.1, "d": 0.0}
    assert r.suggest(0.5) == {"a": 0.9, "b": 0.9, "c": 0.9, "d": 0.0}
    layers, levels, drop = r.pivot("drop")
    assert layers == ["a", "b", "c"] and drop[1, 0] == pytest.approx(0.05)
    with pytest.raises(PrunevizError):
        r.pivot("nope")
    with pytest.raises(PrunevizError):
        r.suggest(-1)
    path = r.to_csv(tmp_path / "sens.csv")
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 9 and table[0]["layer"] == "a" and float(table[1]["metric"]) == 0.895
    assert list(table[0]) == ["layer", "sparsity", "metric", "delta", "accuracy", "loss", "pruned", "size"]
    assert not list(tmp_path.glob(".*tmp"))


def test_loss_metric_direction_and_custom_metric(cnn_session, test_data):
    r = sensitivity_sweep(cnn_session, test_data, levels=(0.9,), layers=["features.0.weight"], metric="loss",
                          executor="inline")
    assert not r.higher_is_better and r.rows[0].delta > 0 and r.drop(r.rows[0]) > 0
    assert r.suggest(0.01) == {"features.0.weight": 0.0}

    def errors(out, y):
        return {"errors": float((out.argmax(1) != y).sum())}

    r = sensitivity_sweep(cnn_session, test_data, levels=(0.9,), layers=["features.0.weight"], metric="errors",
                          executor="inline", evaluator_kwargs={"metric_fn": errors}, higher_is_better=False)
    assert r.rows[0].metric == round((1 - r.rows[0].accuracy) * len(test_data[1]))
    with pytest.raises(PrunevizError, match="unknown metric"):
        sensitivity_sweep(cnn_session, test_data, metric="f1", executor="inline")


def test_structured_scope_and_subset(test_data):
    s = PruningSession(load_demo_model("cnn"), criterion="l1_filter", scope="structured")
    r = sensitivity_sweep(s, test_data, levels=(0.5,), executor="inline", evaluator_kwargs={"subset_size": 100})
    assert s.output_layer not in r.layers and r.scope == "structured"
    for row in r.rows:
        assert row.size == s.target(row.layer).channels and row.pruned == round(0.5 * row.size)
    assert r.baseline_metrics["accuracy"] * 100 == round(r.baseline_metrics["accuracy"] * 100)


def test_others_current_uses_the_plan_for_other_layers(test_data):
    s = PruningSession(load_demo_model("cnn"), scope="layer")
    s.set_sparsity("features.3.weight", 0.9)
    before = state_of(s)
    r = sensitivity_sweep(s, test_data, levels=(0.0, 0.5), layers=["features.0.weight"], others="current",
                          executor="inline")
    current = Evaluator(s.model, test_data).baseline.accuracy
    assert r.baseline == pytest.approx(current)
    assert r.rows[0].metric == pytest.approx(current)  # level 0 of an unpruned layer == the current model
    dense = sensitivity_sweep(s, test_data, levels=(0.0,), layers=["features.0.weight"], executor="inline")
    assert dense.rows[0].metric == pytest.approx(Evaluator(load_demo_model("cnn"), test_data).baseline.accuracy)
    assert_unchanged(s, before)


def test_others_current_structured_restores_the_swept_layers_channel_tensors(test_data):
    s = PruningSession(load_demo_model("cnn"), criterion="l1_filter", scope="structured")
    s.set_sparsities({"features.3.weight": 0.5, "features.7.weight": 0.25})
    before = state_of(s)
    current = Evaluator(s.model, test_data).baseline
    r = sensitivity_sweep(s, test_data, levels=(0.0, 0.25, 0.5), layers=["features.3.weight", "features.7.weight"],
                          others="current", executor="inline")
    got = {(row.layer, row.sparsity): row for row in r.rows}
    # the swept layer at its current ratio (from its originals, BatchNorm scale/shift included) is the current model
    assert got[("features.3.weight", 0.5)].accuracy == current.accuracy
    assert got[("features.3.weight", 0.5)].loss == pytest.approx(current.loss, rel=1e-6)
    assert got[("features.7.weight", 0.25)].accuracy == current.accuracy
    assert_unchanged(s, before)


def test_gradient_criterion_and_unsupported_layers(test_data, cnn_batches):
    x, y = test_data
    s = PruningSession(load_demo_model("cnn"), criterion="saliency", calib_data=[(x[:64], y[:64])])
    r = sensitivity_sweep(s, test_data, levels=(0.5,), layers=["features.3.weight"], executor="inline")
    assert r.criterion == "saliency" and len(r.rows) == 1
    s = PruningSession(load_demo_model("cnn"), criterion="bn_scale", scope="structured")
    r = sensitivity_sweep(s, test_data, levels=(0.5,), executor="inline")
    assert "classifier.0.weight" in r.skipped and r.suggest()["classifier.0.weight"] == 0.0
    assert {row.layer for row in r.rows} == {"features.0.weight", "features.3.weight", "features.7.weight"}


def test_bad_arguments(cnn_session, test_data):
    with pytest.raises(UnknownLayerError):
        sensitivity_sweep(cnn_session, test_data, layers=["features.0.weigth"], executor="inline")
    with pytest.raises(PrunevizError):
        sensitivity_sweep(cnn_session, test_data, levels=(1.5,), executor="inline")
    with pytest.raises(PrunevizError):
        sensitivity_sweep(cnn_session, test_data, levels=(), executor="inline")
    with pytest.raises(PrunevizError):
        sensitivity_sweep(cnn_session, test_data, scope="global", executor="inline")
    with pytest.raises(PrunevizError):
        sensitivity_sweep(cnn_session, test_data, others="frozen", executor="inline")
    with pytest.raises(PrunevizError):
        sensitivity_sweep(cnn_session, test_data, executor="threads")


def test_progress_reports_done_total_and_eta(cnn_session, test_data):
    calls = []
    sensitivity_sweep(cnn_session, test_data, levels=LEVELS, executor="inline",
                      progress=lambda d, t, info: calls.append((d, t, info)))
    assert [c[0] for c in calls] == list(range(1, 16)) and all(c[1] == 15 for c in calls)
    assert calls[-1][2]["eta"] == 0 and calls[0][2]["eta"] >= 0 and calls[0][2]["layer"] == "features.0.weight"


def test_cancel_inline_keeps_session_and_returns_done_layers(test_data):
    s = PruningSession(load_demo_model("cnn"), scope="global")
    s.set_global_sparsity(0.6)
    before = state_of(s)
    stop = threading.Event()

    def progress(done, total, info):
        if done == 4:  # in the middle of the second layer
            stop.set()

    r = sensitivity_sweep(s, test_data, levels=LEVELS, executor="inline", progress=progress, cancel=stop)
    assert r.cancelled and not r.complete and r.done_layers == ["features.0.weight"] and len(r.rows) == 3
    assert_unchanged(s, before)
    r = sensitivity_sweep(s, test_data, executor="inline", cancel=lambda: True)
    assert r.cancelled and r.rows == []
    assert_unchanged(s, before)


@pytest.fixture(scope="module")
def planned_session_and_inline_table(test_data):
    s = PruningSession(load_demo_model("cnn"), scope="layer")
    s.set_global_sparsity(0.3)  # the sweep must not depend on (or change) the session's own plan
    return s, sensitivity_sweep(s, test_data, levels=LEVELS, executor="inline")


@pytest.mark.slow
def test_process_pool_gives_the_same_table_as_inline(test_data, planned_session_and_inline_table):
    s, inline = planned_session_and_inline_table
    before = state_of(s)
    pool = sensitivity_sweep(s, test_data, levels=LEVELS, max_workers=2)
    assert pool.rows == inline.rows  # exactly equal metrics, deltas and counts
    assert pool.baseline == inline.baseline and pool.complete
    assert_unchanged(s, before)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_table_as_inline(test_data, planned_session_and_inline_table):
    distributed = pytest.importorskip("distributed")
    s, inline = planned_session_and_inline_table
    before = state_of(s)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        seen = []
        dask = sensitivity_sweep(s, test_data, levels=LEVELS, executor=client.get_executor(),
                                 progress=lambda d, t, i: seen.append(d))
    assert seen[-1] == 15
    assert dask.rows == inline.rows and dask.baseline == inline.baseline and dask.complete
    assert_unchanged(s, before)


@pytest.mark.slow
def test_cancel_process_pool_keeps_session(test_data):
    s = PruningSession(load_demo_model("cnn"), scope="layer")
    s.set_sparsities({"features.3.weight": 0.5, "classifier.0.weight": 0.7})
    before = state_of(s)
    stop = threading.Event()
    x, y = test_data
    big = (x.repeat(4, 1, 1, 1), y.repeat(4))  # tasks long enough that cancelling always finds some pending
    r = sensitivity_sweep(s, big, levels=LEVELS, max_workers=1, cancel=stop,
                          progress=lambda d, t, i: stop.set())
    assert r.cancelled and 1 <= len(r.done_layers) < 5
    assert all(len([x for x in r.rows if x.layer == n]) == 3 for n in r.done_layers)
    assert_unchanged(s, before)


def test_unpicklable_payload_suggests_inline(test_data):
    s = PruningSession(load_demo_model("cnn"))
    with pytest.raises(PrunevizError, match="executor='inline'"):
        sensitivity_sweep(s, test_data, levels=(0.5,), layers=["features.0.weight"], max_workers=1,
                          evaluator_kwargs={"metric_fn": lambda out, y: 1.0})
