"""Physical channel removal: the slim model computes what the masked model computes, or says why not."""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch_pruning as tp
from torch import nn

import pruneviz.core.guard as guard
import pruneviz.core.removal_graph as rg
from pruneviz.core import PruningSession
from pruneviz.core.removal import (
    NO_STRUCTURE_NOTE,
    ExampleInputError,
    TraceError,
    WorkLimitError,
    WorkLimits,
    replay,
    slim,
    slim_model,
)
from pruneviz.data import build_demo_model, load_demo_model

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], v) for k, v in before.items())


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(x)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_demo_models_remove_exactly(name, digits):
    x, _ = digits
    model = load_demo_model(name)
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    r = slim(s, x[:1])
    assert r.kept == [] and r.note == "" and r.outputs_match is True and r.max_abs_diff <= 1e-5
    assert torch.allclose(_out(r.model, x), _out(model, x), atol=1e-5)  # on all 360 test digits, not just one
    pruned = {t.name: int((~s.channel_mask(t.name)).sum()) for t in s.targets if s.channel_mask(t.name) is not None}
    assert r.removed == {n: k for n, k in pruned.items() if k}
    assert r.params_after < r.params_before and r.macs_after < r.macs_before
    assert 0 < r.macs_ratio < 0.5 and 0 < r.params_ratio < 0.5
    assert all(isinstance(i, int) for step in r.history for i in step["idxs"])
    fresh = replay(build_demo_model(name), r.history, x[:1])  # the history rebuilds the same shapes
    fresh.load_state_dict(r.model.state_dict())
    assert torch.equal(_out(fresh, x), _out(r.model, x))


def test_no_structured_pruning_gives_the_dense_copy_and_a_note(tiny_cnn):
    s = PruningSession(tiny_cnn, criterion="magnitude", scope="layer")
    s.set_global_sparsity(0.5)
    r = slim(s, torch.randn(2, 1, 8, 8))
    assert r.kept == [] and r.removed == {} and r.note == NO_STRUCTURE_NOTE and "structured scope" in r.note
    assert r.params_after == r.params_before and r.macs_after == r.macs_before and r.outputs_match
    assert r.model is not tiny_cnn


def test_check_false_skips_the_comparison(tiny_cnn):
    s = PruningSession(tiny_cnn, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    r = slim(s, torch.randn(1, 1, 8, 8), check=False)
    assert r.outputs_match is None and r.max_abs_diff is None and r.removed


def test_runs_inside_inference_mode_and_transposed_convs(tiny_cnn):
    s = PruningSession(tiny_cnn, criterion="l2_filter", scope="structured")
    s.set_global_sparsity(0.5)
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        r = slim(s, x[:1])
    assert r.outputs_match and "features.6.weight" in r.removed  # the ConvTranspose2d
    assert torch.allclose(_out(r.model, x), _out(tiny_cnn, x), atol=1e-5)


class Residual(nn.Module):
    """relu(bn_a(a(x)) + bn_b(b(x))) -> c: a and b are coupled by the add."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.c(torch.relu(self.bn_a(self.a(x)) + self.bn_b(self.b(x))))


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics like a trained model's (a BatchNorm of zeros then outputs nonzero shifts)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def test_residual_add_removes_only_channels_both_layers_prune():
    torch.manual_seed(0)
    model = _random_bn(Residual())
    x = torch.randn(2, 3, 8, 8)
    same = slim_model(model, x, {"a": [1, 5], "b": [5, 1]})
    assert same.kept == [] and same.removed == {"a.weight": 2, "b.weight": 2} and same.outputs_match
    assert same.model.c.in_channels == 6
    differ = slim_model(model, x, {"a": [1, 2, 5], "b": [5, 6]})
    assert differ.removed == {"a.weight": 1, "b.weight": 1}  # channel 5 is pruned by both
    kept = {k.name: k for k in differ.kept}
    assert kept["a.weight"].channels == 2 and kept["b.weight"].channels == 1
    assert "coupled to b.weight" in kept["a.weight"].reason and "residual add" in kept["a.weight"].reason
    assert differ.outputs_match and differ.max_abs_diff <= 1e-5


def test_resnet18_removes_block_internals_and_reports_the_residual_stream(resnet18):
    s = PruningSession(resnet18, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    r = slim(s, torch.randn(1, 3, 32, 32))
    assert r.outputs_match and r.removed["layer1.0.conv1.weight"] == 32
    kept = {k.name: k.reason for k in r.kept}
    assert "layer1.0.conv2.weight" in kept and "coupled to" in kept["layer1.0.conv2.weight"]
    assert "fc.weight" not in kept and r.macs_ratio < 0.6


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.g(torch.relu(self.bn(self.a(x)))))


def _masked_grouped(model: Grouped, idx: list[int]) -> Grouped:
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for p in (masked.a.weight, masked.a.bias, masked.bn.weight, masked.bn.bias):
            p[idx] = 0
    return masked


def test_grouped_conv_needs_the_same_positions_in_every_group():
    torch.manual_seed(0)
    model, x = _random_bn(Grouped()), torch.randn(1, 3, 6, 6)
    ok = slim_model(model, x, {"a": [1, 5]})  # position 1 in both groups of 4
    assert ok.removed == {"a.weight": 2} and ok.model.g.in_channels == 6 and ok.outputs_match
    bad = slim_model(model, x, {"a": [1, 6]})  # position 1 in group 0, position 2 in group 1
    assert bad.removed == {} and bad.outputs_match
    assert "grouped convolution g (2 groups)" in bad.kept[0].reason and bad.kept[0].channels == 2
    # what torch-pruning alone does with it: the outputs are silently wrong
    masked = _masked_grouped(model, [1, 6])
    raw = copy.deepcopy(masked)
    graph = tp.DependencyGraph().build_dependency(raw, example_inputs=x)
    graph.get_pruning_group(raw.a, tp.prune_conv_out_channels, [1, 6]).prune()
    assert (_out(raw, x) - _out(masked, x)).abs().max() > 1e-3


def test_the_output_check_catches_a_removal_that_changes_the_outputs(monkeypatch):
    import pruneviz.core.removal as removal

    torch.manual_seed(0)
    model, x = _random_bn(Grouped()), torch.randn(1, 3, 6, 6)
    monkeypatch.setattr(removal, "whole_group_problem", lambda graph, group, names: None)  # no grouped-conv rule
    unchecked = slim_model(model, x, {"a": [1, 6]}, check=False)
    assert unchecked.outputs_match is None and unchecked.removed == {"a.weight": 2}
    assert (_out(unchecked.model, x) - _out(_masked_grouped(model, [1, 6]), x)).abs().max() > 1e-3  # wrong!
    checked = slim_model(model, x, {"a": [1, 6]})
    assert checked.outputs_match and checked.removed == {}
    assert "changed the outputs" in checked.kept[0].reason


def test_coupled_groups():
    assert removal_coupled(Residual()) == [["a", "b"]]
    assert removal_coupled(Grouped()) == []


def removal_coupled(model):
    from pruneviz.core.removal import coupled_groups

    return [sorted(g) for g in coupled_groups(model.eval(), torch.randn(1, 3, 8, 8))]


def test_depthwise_with_duplicated_indices():
    torch.manual_seed(0)
    model = _random_bn(nn.Sequential(
        nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 1),
    ))
    x = torch.randn(2, 3, 5, 5)
    r = slim_model(model, x, {"0": [1, 1, 3, 3, 3], "3": [3, 1, 1]})
    assert r.removed == {"0.weight": 2, "3.weight": 2} and r.kept == [] and r.outputs_match
    assert r.model[3].groups == 4 and r.model[6].in_channels == 4
    only_pw = slim_model(model, x, {"0": [1, 3]})  # the depthwise layer keeps them: BN shift flows on
    assert only_pw.removed == {} and "coupled to 3 (" in only_pw.kept[0].reason and only_pw.outputs_match


def test_activation_with_nonzero_f0_keeps_the_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Sigmoid(), nn.Conv2d(6, 2, 1), nn.ReLU(), nn.Conv2d(2, 2, 1)).eval()
    r = slim_model(model, torch.randn(1, 3, 6, 6), {"0": [0, 2], "2": [1]})
    assert r.removed == {"2.weight": 1} and r.outputs_match
    assert "nonzero values" in r.kept[0].reason and "sigmoid" in r.kept[0].reason


def test_output_layer_and_collapsed_layers_are_kept_with_reasons(tiny_cnn):
    s = PruningSession(tiny_cnn, criterion="l1_filter", scope="structured")
    s.set_sparsities({"features.0.weight": 1.0, "classifier.weight": 0.5, "features.3.weight": 0.5})
    r = slim(s, torch.randn(1, 1, 8, 8))
    kept = {k.name: k.reason for k in r.kept}
    assert "collapse" in kept["features.0.weight"] and "output layer" in kept["classifier.weight"]
    assert r.removed == {"features.3.weight": 6} and r.outputs_match


def test_torch_pruning_failures_keep_the_layer_and_go_on(monkeypatch, digits):
    x, _ = digits
    model = load_demo_model("cnn")
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    real_group, real_prune = tp.DependencyGraph.get_pruning_group, tp.dependency.group.Group.prune

    def group(self, module, fn, idxs):
        if module is self.model.features[3]:
            raise ZeroDivisionError("integer division or modulo by zero")
        return real_group(self, module, fn, idxs)

    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", group)
    r = slim(s, x[:1])
    assert [k.name for k in r.kept] == ["features.3.weight"] and "ZeroDivisionError" in r.kept[0].reason
    assert len(r.removed) == 3 and r.outputs_match
    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", real_group)

    calls = []

    def prune(self, idxs=None, record_history=True):  # fails half-way through, once, on the third layer
        calls.append(1)
        if len(calls) == 3:
            self[0].dep(self[0].idxs)  # the root is cut, its coupled layers are not: a broken model
            raise IndexError("list index out of range")
        return real_prune(self, idxs, record_history)

    monkeypatch.setattr(tp.dependency.group.Group, "prune", prune)
    r = slim(s, x[:1])
    assert [k.name for k in r.kept] == ["features.7.weight"] and "while removing" in r.kept[0].reason
    assert r.outputs_match and len(r.removed) == 3  # started again from the masked copy without that layer


def test_failed_group_check_and_fenced_reshape_are_reported(monkeypatch, digits):
    x, _ = digits
    s = PruningSession(load_demo_model("cnn"), criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    monkeypatch.setattr(tp.DependencyGraph, "check_pruning_group", lambda self, g: False)
    r = slim(s, x[:1])
    assert r.removed == {} and all("no channels" in k.reason for k in r.kept) and len(r.kept) == 4
    monkeypatch.undo()

    def zero_division(graph, node):  # what ShuffleNetV2's channel shuffle does to torch-pruning
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setitem(rg._MAPPERS, rg.ops.OPTYPE.RESHAPE, zero_division)
    r = slim(s, x[:1])
    assert [k.name for k in r.kept] == ["features.7.weight"]  # its channels cross the flatten
    assert "cannot map channels through the reshape after features" in r.kept[0].reason
    assert len(r.removed) == 3 and r.outputs_match


def _session_and_snapshot(name: str = "cnn"):
    model = load_demo_model(name)
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    return model, s, _state(model), {n: s.mask(n).clone() for n in s.names}


def _unchanged(model, s, state, masks) -> bool:
    return _same(model, state) and all(torch.equal(s.mask(n), m) for n, m in masks.items())


@pytest.mark.parametrize("bad", [torch.randn(1, 3, 8, 8), torch.randn(1, 1, 5), "not a tensor"])
def test_example_input_that_does_not_fit(bad):
    model, s, state, masks = _session_and_snapshot()
    with pytest.raises(ExampleInputError, match="does not fit DigitsCNN") as e:
        slim(s, bad)
    if isinstance(bad, torch.Tensor):
        assert str(tuple(bad.shape)) in str(e.value)
    assert "forward_fn" in str(e.value) and _unchanged(model, s, state, masks)


def test_dict_inputs_with_forward_fn(digits):
    x, _ = digits
    model, s, state, masks = _session_and_snapshot()
    with pytest.raises(ExampleInputError, match="forward_fn"):
        slim(s, {"pixels": x[:1]})
    r = slim(s, {"pixels": x[:1]}, forward_fn=lambda m, b: m(b["pixels"]))
    assert r.outputs_match and r.kept == [] and r.input_spec is None and _unchanged(model, s, state, masks)


class NoGrad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.b(torch.relu(self.a(x)))


def test_model_torch_pruning_cannot_trace():
    model = NoGrad().eval()
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    state = _state(model)
    with pytest.raises(TraceError, match="none of the pruned layers") as e:
        slim(s, torch.randn(1, 4))
    assert "no torch.no_grad()" in str(e.value) and _same(model, state)


class Busy(nn.Module):
    """A forward that spins in Python for ``seconds`` while autograd is on (i.e. while torch-pruning traces)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.a, self.b = seconds, nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        if torch.is_grad_enabled():
            end = time.perf_counter() + self.seconds
            while time.perf_counter() < end:
                pass
        return self.b(torch.relu(self.a(x)))


def test_work_guard_interrupts_a_slow_graph_build():
    model = Busy(0.0).eval()
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    model.seconds = 30.0
    state = _state(model)
    t0 = time.perf_counter()
    with pytest.raises(WorkLimitError, match=r"took more than 0.3 s") as e:
        slim(s, torch.randn(1, 4), limits=WorkLimits(seconds=0.3))
    assert time.perf_counter() - t0 < 5  # interrupted mid-way, not after the 30 s trace
    assert "WorkLimits(" in str(e.value) and _same(model, state)
    model.seconds = 0.0
    assert slim(s, torch.randn(1, 4)).outputs_match  # the session still works


def test_work_guard_on_memory_growth(monkeypatch):
    model, s, state, masks = _session_and_snapshot("mlp")
    grown = iter(range(0, 10**12, 300 * 2**20))  # every reading 300 MB more than the last
    monkeypatch.setattr(guard, "_rss_bytes", lambda: next(grown))
    with pytest.raises(WorkLimitError, match=r"grew the process's memory by \d+ MB \(limit 500 MB\)"):
        slim(s, torch.randn(1, 64), limits=WorkLimits(memory_mb=500, layer_memory_mb=None))
    assert _unchanged(model, s, state, masks)


def test_layer_limit_keeps_that_layer_and_goes_on(monkeypatch, digits):
    x, _ = digits
    s = PruningSession(load_demo_model("cnn"), criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    real = tp.DependencyGraph.get_pruning_group

    def slow(self, module, fn, idxs):
        if module is self.model.features[3]:  # a group walk that would run away (Swin's did)
            end = time.perf_counter() + 30
            while time.perf_counter() < end:
                pass
        return real(self, module, fn, idxs)

    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", slow)
    t0 = time.perf_counter()
    r = slim(s, x[:1], limits=WorkLimits(layer_seconds=0.2))
    assert time.perf_counter() - t0 < 10
    assert [k.name for k in r.kept] == ["features.3.weight"] and "took more than 0.2 s" in r.kept[0].reason
    assert len(r.removed) == 3 and r.outputs_match
