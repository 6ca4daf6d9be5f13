"""LiveEvaluator faults: a model that raises, a metric that raises or returns NaN, non-finite outputs and bad
data become error events (or clear errors up front), and evaluation carries on afterwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from live_helpers import CHUNKS, Recorder, assert_equal_results, settle, sync_eval, weights_hash
from torch import nn

from pruneviz.core import EvaluationError, PruningSession
from pruneviz.core.live import LiveEvaluator
from pruneviz.data import load_demo_model

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture
def session():
    return PruningSession(load_demo_model("cnn"), scope="global")


# ----------------------------------------------------------------- faults
class Faulty(nn.Module):
    """Identity that raises when the class flag is set (a flag the private copy shares)."""

    fail = False

    def forward(self, x):
        if Faulty.fail:
            raise RuntimeError("sensor offline")
        return x


def faulty_model(chain: bool) -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), Faulty())
    if chain:
        return body.eval()

    class Wrapper(nn.Module):  # a skip connection: not a chain, runs whole
        def __init__(self):
            super().__init__()
            self.body = body
            self.skip = nn.Linear(64, 10)

        def forward(self, x):
            return self.body(x) + self.skip(x.flatten(1))

    return Wrapper().eval()


@pytest.mark.parametrize("chain", [True, False], ids=["prefix-cache", "whole-forward"])
def test_model_that_raises_gives_an_error_event_and_recovers(chain, digits):
    session = PruningSession(faulty_model(chain))
    live = LiveEvaluator(session, digits, **CHUNKS)
    assert live.prefix_cache_active is chain
    rec = Recorder(session)
    live.on_event(rec)
    names = session.names
    try:
        settle(live)
        Faulty.fail = True
        g = session.set_sparsity(names[-1], 0.5).generation
        assert live.wait_idle(30)
        assert live.status == "idle" and live.latest_final.generation < g
        errors = rec.errors(g)
        assert len(errors) == 1 and errors == [live.last_error]
        assert "the model raised during evaluation: RuntimeError: sensor offline" in errors[0]
        assert rec.results(g) == []
        # session and weights are consistent: the plan is in force, the private copy holds its weights
        assert session.plan.sparsity[names[-1]] == 0.5
        assert session.layer_sparsity(names[-1]) == pytest.approx(0.5, abs=1e-3)
        assert weights_hash(live._model, names) == weights_hash(session.model, names)

        Faulty.fail = False
        session.set_sparsity(names[0], 0.4)  # the next valid change evaluates normally
        assert_equal_results(settle(live), sync_eval(session, digits, **CHUNKS))
        Faulty.fail = True
        session.set_sparsity(names[0], 0.6)
        assert live.wait_idle(30) and live.last_error is not None
        Faulty.fail = False
        live.request()  # retry without a change, after fixing the cause outside the session
        assert_equal_results(settle(live), sync_eval(session, digits, **CHUNKS))
    finally:
        Faulty.fail = False
        live.close()


def test_custom_metric_that_raises_or_returns_nan(session, digits):
    mode = {"value": "ok"}

    def metric(out, y):
        if mode["value"] == "raise":
            raise ZeroDivisionError("division by zero")
        if mode["value"] == "nan":
            return {"f1": float("nan")}
        return {"f1": float((out.argmax(1) == y).float().mean())}

    live = LiveEvaluator(session, digits, metric_fn=metric, **CHUNKS)
    rec = Recorder(session)
    live.on_event(rec)
    try:
        settle(live)
        mode["value"] = "raise"
        g = session.set_global_sparsity(0.5).generation
        assert live.wait_idle(30)
        assert rec.errors(g) == [live.last_error]
        assert "your metric_fn raised ZeroDivisionError: division by zero" in live.last_error
        mode["value"] = "nan"
        g = session.set_global_sparsity(0.6).generation
        assert live.wait_idle(30)
        assert len(rec.errors(g)) == 1 and "your metric_fn returned f1=nan" in live.last_error
        mode["value"] = "ok"
        session.set_global_sparsity(0.7)
        final = settle(live)
        assert final.custom["f1"] == pytest.approx(final.accuracy)
        assert_equal_results(final, sync_eval(session, digits, metric_fn=metric, **CHUNKS))
    finally:
        live.close()


class Poison(nn.Module):
    """Identity, or NaN outputs when the class flag is set."""

    on = False

    def forward(self, x):
        return x * float("nan") if Poison.on else x


def test_non_finite_outputs_give_an_error_event(digits):
    torch.manual_seed(0)
    session = PruningSession(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Poison()).eval())
    live = LiveEvaluator(session, digits)
    try:
        settle(live)
        Poison.on = True
        session.set_global_sparsity(0.3)
        assert live.wait_idle(30)
        assert "the loss is nan" in live.last_error and "not finite" in live.last_error
        Poison.on = False
        session.set_global_sparsity(0.4)
        assert_equal_results(settle(live), sync_eval(session, digits))
    finally:
        Poison.on = False
        live.close()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((torch.randn(20, 3, 32, 32), torch.randint(0, 10, (20,))), r"inputs of shape \(3, 32, 32\)"),
        ((torch.randn(20, 1, 8, 8).double(), torch.randint(0, 10, (20,))), "dtype torch.float64"),
        ((torch.randn(20, 1, 8, 8), torch.arange(20) % 10 + 5), "labels range from 5 to 14"),
        ((torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)), "empty"),
    ],
    ids=["shape", "dtype", "labels", "empty"],
)
def test_bad_evaluation_data_is_refused_up_front(session, data, match):
    listeners = len(session._listeners)
    with pytest.raises(EvaluationError, match=match):
        LiveEvaluator(session, data)
    assert len(session._listeners) == listeners  # nothing left subscribed
    session.set_global_sparsity(0.5)  # the session is unaffected


# ----------------------------------------------------------------- regression
def test_regression_with_custom_task_and_metric():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)).eval()
    x = torch.randn(400, 6)
    y = x[:, :1] - 0.5 * x[:, 1:2]

    def metric(out, target):
        return {"mae": float((out - target).abs().mean())}

    kwargs = {"task": "custom", "loss_fn": F.mse_loss, "metric_fn": metric,
              "first_chunk": 50, "chunk_size": 100}
    session = PruningSession(model)
    live = LiveEvaluator(session, (x, y), **kwargs)
    rec = Recorder(session)
    live.on_event(rec)
    try:
        assert live.baseline.accuracy is None and "mae" in live.baseline.custom
        for name in session.names:
            g = session.set_sparsity(name, 0.7).generation
            final = settle(live)
            assert [r.n for r in rec.results(g)] == [50, 150, 250, 350, 400]
            assert final.accuracy is None and final.predictions is None
            assert_equal_results(final, sync_eval(session, (x, y), **kwargs))
        assert final.custom["mae"] != live.baseline.custom["mae"]
    finally:
        live.close()


def test_a_forward_that_hangs_is_stopped_reported_and_the_next_change_works(digits):
    """A model whose forward never returns (a Python loop): the evaluation is interrupted after time_limit, the
    error says so in plain words, and once the model behaves the next change is evaluated normally."""
    import time

    from pruneviz.data import load_demo_model

    class Hangs(torch.nn.Module):
        hang = False

        def __init__(self) -> None:
            super().__init__()
            self.net = load_demo_model("cnn")

        def forward(self, x):
            while type(self).hang:
                time.sleep(0.005)
            return self.net(x)

    model = Hangs().eval()
    session = PruningSession(model, scope="global")
    live = LiveEvaluator(session, digits, time_limit=1.0, prefix_cache=False, **CHUNKS)  # fx would freeze the loop
    try:
        assert live.wait_idle(30)
        Hangs.hang = True
        t0 = time.monotonic()
        session.set_global_sparsity(0.3)
        assert live.wait_idle(30)
        assert 0.9 < time.monotonic() - t0 < 10
        assert live.last_error is not None and "was stopped" in live.last_error and "hang" in live.last_error
        Hangs.hang = False
        session.set_global_sparsity(0.4)
        final = settle(live)
        assert final.accuracy is not None and live.last_error is None
    finally:
        Hangs.hang = False
        live.close()
