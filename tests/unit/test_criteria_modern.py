"""LAMP and Wanda: the papers' formulas on hand-made tensors, exact sparsity in every scope, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pruneviz.core import CriterionError, PruningSession
from pruneviz.core.criteria import ScoreContext
from pruneviz.core.criteria_modern import LAMP, Wanda, lamp_scores
from pruneviz.core.masks import n_pruned
from pruneviz.core.targets import find_targets


def test_lamp_equals_the_papers_formula_on_a_hand_made_tensor():
    w = torch.tensor([[0.5, -2.0], [1.0, 0.25]])
    # sorted ascending by magnitude: 0.25, 0.5, 1.0, -2.0 -> squares 1/16, 1/4, 1, 4 (sum 85/16)
    sq = [1 / 16, 1 / 4, 1.0, 4.0]
    tails = [sum(sq[i:]) for i in range(4)]
    by_hand = {0.25: sq[0] / tails[0], 0.5: sq[1] / tails[1], 1.0: sq[2] / tails[2], -2.0: sq[3] / tails[3]}
    got = lamp_scores(w)
    for v, expected in by_hand.items():
        assert got[w == v].item() == pytest.approx(expected, rel=1e-12)
    assert got.max().item() == 1.0  # the largest weight of a layer always scores 1
    assert lamp_scores(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]  # a tail of zeros scores 0, not NaN


def test_lamp_in_global_scope_never_empties_a_layer(tiny_cnn):
    s = PruningSession(tiny_cnn, criterion=LAMP(), scope="global")
    s.set_global_sparsity(0.99)
    for t in s.targets:
        assert s.zeros(t.name) < t.numel  # every layer keeps at least its largest weight
    assert abs(s.summary().sparsity - 0.99) < 1e-3


@pytest.mark.parametrize("crit", [LAMP, Wanda])
@pytest.mark.parametrize("scope", ["global", "layer", "structured"])
def test_exact_sparsity_in_each_scope(tiny_cnn, cnn_batches, crit, scope):
    s = PruningSession(tiny_cnn, criterion=crit(), scope=scope, calib_data=cnn_batches)
    for v in (0.3, 0.75):
        s.set_global_sparsity(v)
        if scope == "global":
            pool = sum(t.numel for t in s.targets if s.supported(t.name))
            assert sum(s.zeros(t.name) for t in s.targets) == n_pruned(v, pool)
        elif scope == "layer":
            for t in s.targets:
                assert s.zeros(t.name) == n_pruned(v, t.numel)
        else:
            for t in s.targets:
                want = 0 if t.name in s.output_layers else n_pruned(v, t.channels) * t.channel_size
                assert s.zeros(t.name) == want
    s.reset()
    assert all(torch.equal(s.model.get_parameter(n), s.original(n)) for n in s.names)


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_wanda_equals_weight_times_input_norm_by_hand():
    torch.manual_seed(0)
    model = TwoLinear().eval()
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(5, 4, generator=g), torch.randint(0, 2, (5,), generator=g)) for _ in range(3)]
    x = torch.cat([b[0] for b in batches]).double()
    h = torch.relu(x @ model.fc1.weight.double().T + model.fc1.bias.double())
    s = PruningSession(model, criterion=Wanda(), scope="layer", calib_data=batches)
    want1 = model.fc1.weight.detach().double().abs() * x.norm(dim=0)[None, :]  # ||X_j|| over every sample
    want2 = model.fc2.weight.detach().double().abs() * h.norm(dim=0)[None, :]
    assert torch.allclose(s.scores("fc1.weight").double(), want1, rtol=1e-6)
    assert torch.allclose(s.scores("fc2.weight").double(), want2, rtol=1e-6)


def test_wanda_on_a_conv_uses_each_input_channels_norm(cnn_batches):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, groups=2),
                          nn.Flatten(), nn.Linear(6 * 64, 10)).eval()
    s = PruningSession(model, criterion=Wanda(), scope="layer", calib_data=cnn_batches)
    x = torch.cat([b[0] for b in cnn_batches]).double()
    with torch.no_grad():
        a = model[1](model[0](x.float())).double()  # what the grouped conv reads
    norms = a.pow(2).sum(dim=(0, 2, 3)).sqrt()  # per input channel, over samples and positions
    w = model[2].weight.detach().double().abs()  # (6, 2, 3, 3): filters 0-2 read channels 0-1, filters 3-5 2-3
    want = torch.empty_like(w)
    for o in range(6):
        g = o // 3
        for c in range(2):
            want[o, c] = w[o, c] * norms[2 * g + c]
    assert torch.allclose(s.scores("2.weight").double(), want, rtol=1e-5)


def test_wanda_needs_calibration_data_and_leaves_the_model_alone(tiny_cnn, cnn_batches):
    with pytest.raises(CriterionError, match="calib"):
        PruningSession(tiny_cnn, criterion=Wanda())
    targets = find_targets(tiny_cnn)
    ctx = ScoreContext(tiny_cnn, targets, {t.name: tiny_cnn.get_parameter(t.name).detach().clone() for t in targets})
    with pytest.raises(CriterionError, match="calibration data"):
        Wanda().weight_scores(ctx)
    tiny_cnn.train()
    twin = copy.deepcopy(tiny_cnn)
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    s = PruningSession(tiny_cnn, criterion="magnitude", scope="global", calib_data=cnn_batches)
    s.set_global_sparsity(0.6)  # Wanda scores the original weights, not the pruned ones
    s.set_criterion(Wanda())
    fresh = PruningSession(twin, criterion=Wanda(), calib_data=cnn_batches)
    for n in s.names:
        assert torch.equal(s.scores(n), fresh.scores(n))
    s.reset()
    assert tiny_cnn.training  # the copy ran in eval mode; BatchNorm statistics are untouched
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())

