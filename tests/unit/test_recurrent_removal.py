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


# ------------------------------------------------------------------ per-direction masks, RNN inputs
def test_each_direction_may_keep_its_own_units():
    torch.manual_seed(0)
    rnn = nn.GRU(5, H, num_layers=2, bidirectional=True).eval()
    g = torch.Generator().manual_seed(3)
    keep = {}
    for layer in range(2):
        for d in range(2):
            m = torch.zeros(H, dtype=torch.bool)
            m[torch.randperm(H, generator=g)[:4]] = True
            keep[(layer, d)] = m
    masked, small = zero_hidden_units(copy.deepcopy(rnn), keep), remove_hidden_units(rnn, keep)
    x = torch.randn(6, 2, 5)
    with torch.no_grad():
        cols = output_keep(rnn, keep)
        assert torch.equal(cols, torch.cat([keep[(1, 0)], keep[(1, 1)]]))
        assert torch.allclose(masked(x)[0][..., cols], small(x)[0], atol=1e-6)


def test_shrink_rnn_inputs_drops_columns_of_every_direction():
    from pruneviz.core.recurrent_removal import shrink_rnn_inputs

    torch.manual_seed(0)
    rnn = nn.LSTM(6, 4, bidirectional=True, batch_first=True).eval()
    keep = torch.tensor([True, False, True, True, False, True])
    small = shrink_rnn_inputs(rnn, keep)
    assert small.input_size == 4 and small.weight_ih_l0_reverse.shape == (16, 4)
    x = torch.randn(2, 5, 6) * keep  # the dropped inputs are zero: outputs must not change
    with torch.no_grad():
        assert torch.allclose(rnn(x)[0], small(x[..., keep])[0], atol=1e-6)
    with pytest.raises(PrunevizError, match="one per input"):
        shrink_rnn_inputs(rnn, torch.ones(5, dtype=torch.bool))


# ------------------------------------------------------------------ slim() removes hidden units and embedding dims
def _text_gru_session(embeddings: bool):
    from pruneviz.core import PruningSession
    from pruneviz.data.modality_models import load_modality_model

    model = load_modality_model("text_gru")
    s = PruningSession(model, scope="structured", criterion="magnitude", embeddings=embeddings)
    s.set_global_sparsity(0.5)
    return s


@pytest.fixture(scope="module")
def text_ids():
    from pruneviz.data.demos import DEMOS

    (x, _), _ = DEMOS["text_gru"].data()
    return x[:256]


@pytest.mark.parametrize("embeddings", [False, True])
def test_text_gru_at_half_loses_half_its_hidden_units(embeddings, text_ids):
    from pruneviz.core.removal import replay, slim
    from pruneviz.data.modality_models import load_modality_model

    s = _text_gru_session(embeddings)
    r = slim(s, text_ids[:1])
    small = r.model
    assert small.gru.hidden_size == 32 and small.head.in_features == 64  # mean + max pooling: both halves shrink
    assert r.removed["gru.weight_ih_l0"] == 32 and r.removed["gru.weight_hh_l0"] == 32
    assert small.embedding.embedding_dim == (32 if embeddings else 64) and small.gru.input_size == (
        32 if embeddings else 64)
    assert r.kept == [] and r.outputs_match and r.params_after < r.params_before and r.macs_after < r.macs_before
    with torch.inference_mode():
        assert torch.allclose(small(text_ids), s.model.eval()(text_ids), atol=1e-5)  # 256 snippets, not one
    fresh = replay(load_modality_model("text_gru"), r.history, None)  # unit steps replay without an input
    fresh.load_state_dict(small.state_dict())
    with torch.inference_mode():
        assert torch.equal(fresh(text_ids), small(text_ids))


def test_tiny_rnn_lstm_into_bidirectional_gru(tiny_rnn):
    from pruneviz.core import PruningSession
    from pruneviz.core.removal import slim

    s = PruningSession(tiny_rnn, scope="structured")
    s.set_global_sparsity(0.5)
    x = torch.randint(0, 20, (5, 7))
    r = slim(s, x[:1])
    m = r.model
    assert (m.lstm.hidden_size, m.gru.input_size, m.gru.hidden_size, m.head.in_features) == (8, 8, 6, 12)
    assert r.kept == [] and r.outputs_match
    with torch.inference_mode():
        assert torch.allclose(m(x), tiny_rnn(x), atol=1e-5)


class _Reader(nn.Module):
    """An RNN whose output goes to ``how``: a LayerNorm, the output itself, or its final state."""

    def __init__(self, how: str, cell=nn.GRU, **kw) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.how = how
        self.rnn = cell(4, 8, batch_first=True, **kw)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(kw.get("proj_size") or 8, 3)

    def forward(self, x):
        out, h = self.rnn(x)
        if self.how == "norm":
            return self.head(self.norm(out[:, -1]))
        if self.how == "state":
            return self.head(h[-1])
        if self.how == "output":
            return out
        return self.head(out[:, -1])


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("how, cell, kw, words", [
    ("norm", nn.GRU, {}, "reach LayerNorm norm"),
    ("state", nn.GRU, {}, "final hidden state"),
    ("output", nn.GRU, {}, "model's output"),
    ("head", nn.LSTM, {"proj_size": 5}, "projection"),
])
def test_what_cannot_shrink_keeps_the_units_and_says_why(how, cell, kw, words):
    from pruneviz.core import PruningSession
    from pruneviz.core.removal import slim

    model = _Reader(how, cell, **kw).eval()
    s = PruningSession(model, scope="structured", protect=["head"])
    s.set_global_sparsity(0.5)
    x = torch.randn(2, 5, 4)
    r = slim(s, x[:1])
    assert r.kept and all(words in k.reason for k in r.kept if k.name.startswith("rnn.")), r.kept
    assert not any(n.startswith("rnn.") for n in r.removed) and r.outputs_match
    with torch.inference_mode():
        assert torch.allclose(_out(r.model, x), _out(s.model, x), atol=1e-5)


def _out(model, x):
    with torch.inference_mode():
        out = model.eval()(x)
    return out


def test_attention_heads_are_kept_with_the_reason():
    from pruneviz.core import PruningSession
    from pruneviz.core.removal import slim
    from pruneviz.data.demos import DEMOS
    from pruneviz.data.modality_models import load_modality_model

    (x, _), _ = DEMOS["text_transformer"].data()
    s = PruningSession(load_modality_model("text_transformer"), scope="structured")
    s.set_global_sparsity(0.5)
    r = slim(s, x[:1])
    kept = {k.name: k.reason for k in r.kept}
    name = next(n for n in kept if n.endswith("in_proj_weight"))
    assert "stock nn.MultiheadAttention" in kept[name] and "embed_dim" in kept[name]
    assert r.outputs_match


class _ConvGRU(nn.Module):
    """Conv1d features over time -> GRU -> Linear: torch-pruning's channels and hidden units in one model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.gru = nn.GRU(8, 10, batch_first=True)
        self.mid = nn.Linear(10, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x)).transpose(1, 2)
        return self.head(torch.relu(self.mid(self.gru(h)[0].mean(1))))


def test_hidden_units_and_channels_together_and_the_file_reloads(tmp_path):
    from pruneviz.core import PruningSession
    from pruneviz.core.removal import slim
    from pruneviz.core.slim_export import load_slim, save_slim

    model = _ConvGRU().eval()
    s = PruningSession(model, scope="structured")
    s.set_global_sparsity(0.5)
    x = torch.randn(4, 3, 9)
    r = slim(s, x[:1])
    assert r.model.gru.hidden_size == 5 and r.model.mid.in_features == 5 and r.model.mid.out_features == 3
    assert r.outputs_match and torch.allclose(_out(r.model, x), _out(s.model, x), atol=1e-5)
    save_slim(r, tmp_path / "m.pt", arch=_ConvGRU, example_input=x[:1])
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert {step["fn"] for step in raw["history"]} >= {"remove_hidden_units", "shrink_linear_inputs"}
    assert torch.equal(_out(load_slim(tmp_path / "m.pt"), x), _out(r.model, x))
