"""Exact sparsity for every criterion x scope; structured masks; global = weighted mean of layers."""

import math

import pytest
import torch

from pruneviz.core import CRITERIA, PruningSession, get_criterion
from pruneviz.data import load_demo_model

UNSTRUCTURED = ("layer", "global")


def expected(s: float, n: int) -> int:
    return math.floor(s * n + 0.5)


def models(request_name, request):
    if request_name == "resnet18":
        return request.getfixturevalue("resnet18")
    if request_name in ("cnn", "mlp"):
        return load_demo_model(request_name)
    return request.getfixturevalue(request_name)


def make_session(model, criterion, scope, cnn_batches):
    calib = None
    if get_criterion(criterion).needs_data:
        x = cnn_batches[0][0]
        calib = cnn_batches if model.__class__.__name__ != "ResNet" else [
            (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
        if model.__class__.__name__ == "TinyRNN":
            calib = [(torch.randint(0, 20, (4, 5)), torch.randint(0, 3, (4,)))]
        del x
    return PruningSession(model, criterion=criterion, scope=scope, calib_data=calib)


MODELS = ["tiny_cnn", "cnn", "mlp", "resnet18"]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_layer_and_global_scope_are_exact(model_name, criterion, request, cnn_batches):
    model = models(model_name, request)
    if criterion == "bn_scale" and model_name == "mlp":
        pytest.skip("the MLP has no BatchNorm (its error is tested separately)")
    s = make_session(model, criterion, "layer", cnn_batches)
    for value in (0.0, 0.37, 0.5, 0.913, 1.0):
        s.set_global_sparsity(value)
        for t in s.targets:
            want = expected(value, t.numel) if s.supported(t.name) else 0
            assert s.zeros(t.name) == want, (t.name, value)
            assert int((~s.mask(t.name)).sum()) == want
            w = dict(s.model.named_parameters())[t.name]
            assert torch.equal(w[~s.mask(t.name)], torch.zeros(want))
            assert torch.equal(w[s.mask(t.name)], s.original(t.name)[s.mask(t.name)])
    s.set_scope("global")
    pool = [t for t in s.targets if s.supported(t.name)]
    n_total = sum(t.numel for t in pool)
    for value in (0.21, 0.5, 0.88):
        s.set_global_sparsity(value)
        pruned = sum(s.zeros(t.name) for t in pool)
        assert pruned == expected(value, n_total)
        # the global sparsity is the numel-weighted mean of the per-layer sparsities it implies
        implied = s.layer_sparsities()
        weighted = sum(implied[t.name] * t.numel for t in pool) / n_total
        assert weighted == pytest.approx(pruned / n_total, abs=1e-12)


@pytest.mark.parametrize("model_name", ["tiny_cnn", "cnn", "resnet18"])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_structured_scope_zeroes_whole_channels(model_name, criterion, request, cnn_batches):
    model = models(model_name, request)
    s = make_session(model, criterion, "structured", cnn_batches)
    s.set_global_sparsity(0.4)
    params = dict(s.model.named_parameters())
    for t in s.targets:
        if t.name == s.output_layer or not s.supported(t.name):
            assert s.zeros(t.name) == 0
            continue
        k = expected(0.4, t.channels)
        keep = s.channel_mask(t.name)
        assert int((~keep).sum()) == k
        w = params[t.name].movedim(t.channel_dim, 0).reshape(t.channels, -1)
        assert torch.all(w[~keep] == 0)
        assert torch.equal(w[keep], s.original(t.name).movedim(t.channel_dim, 0).reshape(t.channels, -1)[keep])
        assert s.zeros(t.name) == k * t.channel_size
        if t.bias_name:
            assert torch.all(params[t.bias_name][~keep] == 0)
    s.set_scope("layer")  # leaving structured scope restores the biases
    for t in s.targets:
        if t.bias_name:
            assert torch.equal(params[t.bias_name], s.original_bias(t.name))


def test_ties_are_broken_deterministically():
    lin = torch.nn.Linear(10, 10)
    with torch.no_grad():
        lin.weight.fill_(0.5)
    s = PruningSession(torch.nn.Sequential(lin))
    s.set_sparsity("0.weight", 0.3)
    first = s.mask("0.weight").clone()
    assert int((~first).sum()) == 30
    s.reset()
    s.set_sparsity("0.weight", 0.3)
    assert torch.equal(s.mask("0.weight"), first)
    assert not first.view(-1)[:30].any()  # lower index pruned first


def test_rnn_weights_are_pruned_exactly(tiny_rnn):
    s = PruningSession(tiny_rnn, scope="global")
    s.set_global_sparsity(0.6)
    total = sum(t.numel for t in s.targets)
    assert sum(s.zeros(n) for n in s.names) == expected(0.6, total)
    out = tiny_rnn(torch.randint(0, 20, (2, 5)))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
