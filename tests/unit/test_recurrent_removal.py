"""Hidden-unit removal for LSTM/GRU/RNN equals the masked (zeroed rows and biases) module exactly."""

import copy

import pytest
import torch
from torch import nn

from pruneviz.core.errors import PrunevizError
from pruneviz.core.recurrent_removal import (
    output_keep,
    remove_hidden_units,
    shrink_linear_inputs,
    zero_hidden_units,
)

H = 10


def _keep(layers: int, seed: int) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in range(layers):
        m = torch.zeros(H, dtype=torch.bool)
        m[torch.randperm(H, generator=g)[:6]] = True  # 6 of 10 kept, a different choice per layer
        out[layer] = m
    return out


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_removed_equals_masked(cls, layers, bidirectional, batch_first):
    torch.manual_seed(0)
    rnn = cls(5, H, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first).eval()
    dirs = 2 if bidirectional else 1
    head = nn.Linear(dirs * H, 3).eval()
    keep = _keep(layers, seed=layers * 7 + dirs)
    before = copy.deepcopy(rnn.state_dict())

    masked = zero_hidden_units(copy.deepcopy(rnn), keep)
    small = remove_hidden_units(rnn, keep)
    small_head = shrink_linear_inputs(head, output_keep(rnn, keep))
    x = torch.randn((3, 7, 5) if batch_first else (7, 3, 5))

    with torch.no_grad():
        out_m, h_m = masked(x)
        out_s, h_s = small(x)
    hm = h_m[0] if cls is nn.LSTM else h_m
    hs = h_s[0] if cls is nn.LSTM else h_s
    cols = output_keep(rnn, keep)
    assert small.hidden_size == 6 and out_s.shape[-1] == 6 * dirs
    assert torch.allclose(out_m[..., cols], out_s, atol=1e-6)
    assert torch.all(out_m[..., ~cols] == 0)  # the removed units really output zeros in the masked model
    assert torch.allclose(head(out_m), small_head(out_s), atol=1e-6)
    last = keep[layers - 1]
    assert torch.allclose(hm[-dirs:][..., last], hs[-dirs:], atol=1e-6)
    for k, v in rnn.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in rnn.parameters())


def test_single_mask_for_all_layers_and_dropout_config_kept():
    rnn = nn.GRU(4, H, num_layers=2, dropout=0.1, batch_first=True)
    keep = torch.arange(H) % 2 == 0
    small = remove_hidden_units(rnn, keep)
    assert (small.hidden_size, small.num_layers, small.dropout, small.batch_first) == (5, 2, 0.1, True)
    assert small.weight_ih_l1.shape == (3 * 5, 5) and small.weight_hh_l0.shape == (15, 5)


def test_relu_rnn_keeps_its_nonlinearity():
    rnn = nn.RNN(4, H, nonlinearity="relu").eval()
    keep = torch.arange(H) < 3
    small = remove_hidden_units(rnn, keep)
    assert small.nonlinearity == "relu"
    x = torch.randn(6, 2, 4)
    with torch.no_grad():
        assert torch.allclose(zero_hidden_units(copy.deepcopy(rnn), keep)(x)[0][..., keep], small(x)[0], atol=1e-6)


@pytest.mark.parametrize(
    "make, keep, match",
    [
        (lambda: nn.LSTM(4, H, proj_size=3), torch.ones(H, dtype=torch.bool), "proj_size"),
        (lambda: nn.LSTM(4, H, num_layers=2), {0: torch.arange(H) < 5, 1: torch.arange(H) < 4}, "same number"),
        (lambda: nn.GRU(4, H), torch.ones(H - 1, dtype=torch.bool), "one per hidden unit"),
        (lambda: nn.RNN(4, H), torch.zeros(H, dtype=torch.bool), "at least one"),
        (lambda: nn.Linear(4, H), torch.ones(H, dtype=torch.bool), "LSTM, nn.GRU or nn.RNN"),
    ],
)
def test_refusals_are_clear(make, keep, match):
    with pytest.raises(PrunevizError, match=match):
        remove_hidden_units(make(), keep)


def test_shrink_linear_inputs_checks_its_mask():
    with pytest.raises(PrunevizError, match="one per input"):
        shrink_linear_inputs(nn.Linear(6, 2), torch.ones(5, dtype=torch.bool))
