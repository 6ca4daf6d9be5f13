"""StagedModel and the LiveEvaluator's prefix cache: a model split into a chain of stages gives bit-identical
outputs, cached activations give exactly the full-forward answer for every layer, and models that are not
a chain fall back to a whole forward with correct results."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import EvalResult, Evaluator
from pruneviz.core.live import LiveEvaluator
from pruneviz.core.prefix import StagedModel
from pruneviz.data import digits_tensors, load_demo_model

RESNET_STAGES = [
    "conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
    "layer3.0", "layer3.1", "layer4.0", "layer4.1", "avgpool", "flatten", "fc",
]


def stage_names(staged: StagedModel) -> list[str]:
    return [n.target if isinstance(n.target, str) else n.target.__name__ for n in staged.nodes]


def assert_equal_results(live: EvalResult, sync: EvalResult) -> None:
    """Exact equality of predictions and accuracy; the loss within 1e-6 relative (or exactly equal)."""
    assert live.final and sync.final and live.n == sync.n
    np.testing.assert_array_equal(live.predictions, sync.predictions)
    assert live.accuracy == sync.accuracy
    np.testing.assert_array_equal(live.confusion, sync.confusion)
    assert live.loss == sync.loss or abs(live.loss - sync.loss) <= 1e-6 * abs(sync.loss)


def settle(live: LiveEvaluator) -> EvalResult:
    assert live.wait_idle(30), "the live evaluator did not finish"
    assert live.last_error is None, live.last_error
    final = live.latest_final
    assert final is not None and final.generation == live.session.generation
    return final


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(7)
    return torch.randn(40, 3, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g)


# ----------------------------------------------------------------- StagedModel
def test_resnet18_splits_into_its_chain_of_blocks(resnet18):
    staged = StagedModel(resnet18)
    assert staged.ok and staged.reason == ""
    assert stage_names(staged) == RESNET_STAGES
    assert staged.stage_of("conv1") == 0
    assert staged.stage_of("layer1.0.conv1") == 4
    assert staged.stage_of("layer4.0.downsample.0") == 10
    assert staged.stage_of("layer4.1.conv2") == 11
    assert staged.stage_of("fc") == 14
    assert staged.stage_of("not.a.module") == 0  # unknown: run everything
    assert staged.first_stage(["fc", "layer3.1.conv1"]) == 9 and staged.first_stage([]) is None


@pytest.mark.parametrize("name", ["tiny_cnn", "cnn", "mlp", "resnet18"])
def test_staged_run_is_bit_identical_to_the_model_from_every_stage(name, request):
    if name in ("cnn", "mlp"):
        model = load_demo_model(name)
        x = digits_tensors("test")[0][:24]
    else:
        model = request.getfixturevalue(name)
        x = torch.randn(6, 3, 32, 32) if name == "resnet18" else torch.randn(24, 1, 8, 8)
    staged = StagedModel(model)
    assert staged.ok, staged.reason
    with torch.inference_mode():
        full = model(x)
        out, cap = staged.run(x)
        assert cap is None and torch.equal(out, full)
        for stage in range(len(staged)):
            _, entering = staged.run(x, 0, None, capture=stage)
            resumed, again = staged.run(x, stage, entering, capture=stage)
            assert again is entering
            assert torch.equal(resumed, full), f"resuming at stage {stage}"


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x, scale=None):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(h if scale is None else h * scale)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc2(x + torch.relu(self.fc1(x)))


class ReturnsDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return {"logits": self.fc(x.flatten(1))}


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if x.sum() > 0:  # torch.fx cannot trace control flow on values
            x = -x
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        ("tiny_rnn", "not a chain"),
        (TwoInputs, "takes 2 inputs"),
        (Residual, "not a chain"),
        (ReturnsDict, "does not return the last stage"),
        (DataDependent, "cannot trace"),
    ],
)
def test_models_that_are_not_a_chain_fall_back(factory, reason, request):
    model = request.getfixturevalue(factory) if isinstance(factory, str) else factory()
    staged = StagedModel(model)
    assert staged.ok is False and staged.nodes == []
    assert reason in staged.reason
    with pytest.raises(RuntimeError, match="cannot run in stages"):
        staged.run(torch.randn(2, 1, 8, 8))


# ----------------------------------------------------------------- prefix cache == full forward
@pytest.mark.parametrize("model_name", ["cnn", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_prefix_cache_equals_full_forward_for_every_layer(model_name, request, digits, images):
    """Move each layer's slider (front to back, then back to front: ResNet-18's last 8 only, then the same
    layer again); after each move the LiveEvaluator's final (from cached activations) equals
    Evaluator.evaluate of the session's model with identical chunking."""
    if model_name == "cnn":
        model, data, chunks = load_demo_model("cnn"), digits, {"first_chunk": 40, "chunk_size": 100}
    else:
        model, data = request.getfixturevalue("resnet18"), images
        chunks = {"first_chunk": 12, "chunk_size": 14}
    session = PruningSession(model)
    live = LiveEvaluator(session, data, **chunks)
    reference = Evaluator(session.model, data, **chunks)
    assert live.prefix_cache_active
    assert live.evaluator.bounds == reference.bounds and len(reference.bounds) >= 3
    settle(live)
    names = session.names
    back = names[::-1] if model_name == "cnn" else names[:-9:-1]
    moves = [(n, 0.5) for n in names] + [(n, 0.8) for n in back] + [(names[-2], 0.3), (names[-2], 0.9)]
    try:
        for name, value in moves:
            session.set_sparsity(name, value)
            assert_equal_results(settle(live), reference.evaluate(session.model))
        assert live._cache.entries, "the prefix cache was never used"
    finally:
        live.close()


def test_prefix_cache_skips_the_unchanged_front_of_resnet18(resnet18, images):
    session = PruningSession(resnet18)
    live = LiveEvaluator(session, images, first_chunk=12, chunk_size=14)
    calls = {"conv1": 0, "layer4.0": 0, "layer4.1": 0}
    for name in calls:
        live._model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1))
    try:
        settle(live)
        session.set_sparsity("layer4.0.conv2.weight", 0.5)  # nothing cached yet: a full forward
        settle(live)
        session.set_sparsity("layer4.1.conv1.weight", 0.5)  # restarts at layer4.0 (cached at the last move)
        settle(live)
        before = dict(calls)
        session.set_sparsity("layer4.1.conv1.weight", 0.7)  # restarts at layer4.1
        settle(live)
        session.set_sparsity("layer4.0.conv1.weight", 0.6)  # restarts at layer4.0
        settle(live)
        n_chunks = len(live.evaluator.bounds)
        assert calls["conv1"] == before["conv1"]
        assert calls["layer4.0"] == before["layer4.0"] + n_chunks
        assert calls["layer4.1"] == before["layer4.1"] + 2 * n_chunks
        assert sorted(live._cache.entries) == [10, 11]
        # a move at the front invalidates both entries: a full forward, right answer
        session.set_sparsity("conv1.weight", 0.5)
        final = settle(live)
        assert calls["conv1"] == before["conv1"] + n_chunks
        ref = Evaluator(session.model, images, first_chunk=12, chunk_size=14).evaluate(session.model)
        assert_equal_results(final, ref)
    finally:
        live.close()


@pytest.mark.parametrize("model_name", ["cnn", "resnet18"])
def test_prefix_cache_in_structured_scope(model_name, request, digits, images):
    """Structured scope also zeroes the bias and the following BatchNorm's scale and shift (a later stage):
    every final still equals the full forward."""
    if model_name == "cnn":
        model, data = load_demo_model("cnn"), digits
    else:
        model, data = request.getfixturevalue("resnet18"), images
    chunks = {"first_chunk": 16, "chunk_size": 24}
    session = PruningSession(model, scope="structured")
    live = LiveEvaluator(session, data, **chunks)
    reference = Evaluator(session.model, data, **chunks)
    if model_name == "cnn":
        names = session.names[:-1]  # not the output layer
    else:
        names = ["conv1.weight", "layer4.0.conv1.weight", "layer4.1.conv1.weight", "layer4.1.conv2.weight"]
    try:
        for value in (0.25, 0.5):
            for name in names:
                session.set_sparsity(name, value)
                assert_equal_results(settle(live), reference.evaluate(session.model))
        assert live._cache.entries
    finally:
        live.close()


def test_random_walk_over_layers_with_a_tiny_cache_budget(digits):
    """A seeded random walk over the demo CNN's sliders (and the global slider, undo and redo), with a cache
    budget that holds only some entries: every final equals the full forward."""
    rng = random.Random(5)
    session = PruningSession(load_demo_model("cnn"))
    chunks = {"first_chunk": 64, "chunk_size": 128}
    live = LiveEvaluator(session, digits, cache_mb=0.3, **chunks)
    reference = Evaluator(session.model, digits, **chunks)
    try:
        settle(live)
        for step in range(40):
            r = rng.random()
            if r < 0.1:
                session.undo()
            elif r < 0.15:
                session.redo()
            elif r < 0.25:
                session.set_global_sparsity(rng.uniform(0, 0.9))
            else:
                session.set_sparsity(rng.choice(session.names), rng.uniform(0, 0.95))
            assert_equal_results(settle(live), reference.evaluate(session.model))
            used = sum(e[2] for e in live._cache.entries.values())
            assert used <= 0.3 * 2**20, f"step {step}: cache over budget"
    finally:
        live.close()


class AddInPlace(nn.Module):
    """A residual block that adds to its input in place (``x += f(x)``)."""

    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        x += torch.relu(self.fc(x))
        return x


def in_place_model() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(64, 32), AddInPlace(32), AddInPlace(32), nn.Linear(32, 10)]
    return nn.Sequential(*layers).eval()


def test_stages_whose_input_is_modified_in_place_are_found(resnet18):
    assert in_place_model_staged().mutated_inputs(torch.randn(2, 1, 8, 8)) == {2, 3}
    assert StagedModel(resnet18).mutated_inputs(torch.randn(2, 3, 32, 32)) == {2}  # ReLU(inplace=True)
    assert StagedModel(load_demo_model("cnn")).mutated_inputs(torch.randn(2, 1, 8, 8)) == set()


def in_place_model_staged() -> StagedModel:
    staged = StagedModel(in_place_model())
    assert staged.ok
    return staged


def test_prefix_cache_never_caches_an_input_the_forward_modifies_in_place(digits):
    """Regression: the activation entering an ``x += f(x)`` block was cached, and every run resuming from it
    added to it again, so results drifted further from the truth at each move."""
    session = PruningSession(in_place_model())
    chunks = {"first_chunk": 64, "chunk_size": 128}
    live = LiveEvaluator(session, digits, **chunks)
    reference = Evaluator(session.model, digits, **chunks)
    try:
        assert live.prefix_cache_active and live._no_cache == {2, 3}
        for name in ["3.fc.weight", "2.fc.weight", "4.weight"]:
            for value in (0.3, 0.6, 0.9, 0.2):
                session.set_sparsity(name, value)
                assert_equal_results(settle(live), reference.evaluate(session.model))
        assert 4 in live._cache.entries and not {2, 3} & set(live._cache.entries)
    finally:
        live.close()


class LSTMChain(nn.Module):
    """A chain whose stages pass a tuple (the LSTM's (output, state)) and index into it."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.lstm(self.embed(x))[0][:, -1])


def test_prefix_cache_on_a_chain_that_passes_tuples():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = (torch.randint(0, 20, (90, 6), generator=g), torch.randint(0, 3, (90,), generator=g))
    session = PruningSession(LSTMChain().eval())
    live = LiveEvaluator(session, data, first_chunk=20, chunk_size=30)
    reference = Evaluator(session.model, data, first_chunk=20, chunk_size=30)
    try:
        assert live.prefix_cache_active
        assert stage_names(live._staged) == ["embed", "lstm", "getitem", "getitem", "head"]
        for value in (0.3, 0.6, 0.8):
            for name in session.names:
                session.set_sparsity(name, value)
                assert_equal_results(settle(live), reference.evaluate(session.model))
        assert live._cache.entries
    finally:
        live.close()


# ----------------------------------------------------------------- fallback models evaluate correctly
def test_live_evaluator_on_an_rnn_falls_back_and_is_correct(tiny_rnn):
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 20, (90, 7), generator=g), torch.randint(0, 3, (90,), generator=g))
    session = PruningSession(tiny_rnn)
    live = LiveEvaluator(session, data, first_chunk=20, chunk_size=30)
    reference = Evaluator(session.model, data, first_chunk=20, chunk_size=30)
    try:
        assert not live.prefix_cache_active and not live._staged.ok
        assert_equal_results(settle(live), reference.evaluate(session.model))
        for name in session.names:
            session.set_sparsity(name, 0.7)
            assert_equal_results(settle(live), reference.evaluate(session.model))
        session.set_global_sparsity(0.9)
        assert_equal_results(settle(live), reference.evaluate(session.model))
        assert not live._cache.entries
    finally:
        live.close()


@pytest.mark.parametrize("factory", [TwoInputs, Residual])
def test_live_evaluator_on_non_chain_models_is_correct(factory, digits):
    torch.manual_seed(0)
    session = PruningSession(factory().eval())
    live = LiveEvaluator(session, digits, first_chunk=50, chunk_size=100)
    reference = Evaluator(session.model, digits, first_chunk=50, chunk_size=100)
    try:
        assert not live.prefix_cache_active
        for name in session.names:
            session.set_sparsity(name, 0.6)
            assert_equal_results(settle(live), reference.evaluate(session.model))
    finally:
        live.close()
