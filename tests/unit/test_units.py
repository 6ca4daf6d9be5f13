"""Structured units beyond conv channels: RNN hidden units (every gate, weight_ih and weight_hh together),
attention heads (q, k, v rows of the packed in_proj_weight), embedding dimensions; tied tensors as one target;
what the session leaves out, and why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneviz.core import CRITERIA, PruningSession
from pruneviz.core.criteria import channel_view
from pruneviz.core.masks import expand_channel_mask, unit_rows


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], bidirectional: bool = False, layers: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = cell(6, 10, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(10 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(30, 8)
        self.mix = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 30, bias=False)
        self.decoder.weight = self.embed.weight  # tied input and output embeddings

    def forward(self, ids):
        h = self.mix(self.embed(ids)).relu()
        return self.mix(h).mean(1) @ self.decoder.weight.t()  # mix used twice: still one tensor


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_hidden_units_prune_every_gate_of_both_matrices(cell, bidirectional):
    model = Recurrent(cell, bidirectional).eval()
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cell]
    ih, hh = "rnn.weight_ih_l1", "rnn.weight_hh_l1"  # the last layer: its units are the layer's output
    assert s.target(ih).gates == gates and s.target(ih).channels == 10
    assert s.unit_group(ih) == [ih, hh]
    s.set_sparsity(ih, 0.3)  # one member: the whole group follows
    assert s.layer_sparsity(hh) == pytest.approx(0.3)
    keep_ih, keep_hh = s.channel_mask(ih), s.channel_mask(hh)
    assert torch.equal(keep_ih, keep_hh) and int((~keep_ih).sum()) == 3
    # every gate row of a removed unit is zero in both matrices, and so are both biases' rows
    for name in (ih, hh):
        w = s.model.get_parameter(name)
        assert bool((channel_view(w, s.target(name))[~keep_ih] == 0).all())
        assert bool((channel_view(w, s.target(name))[keep_ih].abs().sum(1) > 0).all())
    for b in ("rnn.bias_ih_l1", "rnn.bias_hh_l1"):
        assert bool((s.model.get_parameter(b)[~unit_rows(keep_ih, s.target(ih))] == 0).all())
    # so the removed units output exactly 0 at every step: the layer behaves as if they were not there
    x = torch.randn(4, 7, 6)
    with torch.no_grad():
        out, _ = model.rnn(x)
    removed = (~keep_ih).nonzero().flatten()
    assert torch.equal(out[..., removed], torch.zeros_like(out[..., removed]))
    s.set_global_sparsity(0.5)
    for members in s._unit_groups.values():
        assert len({int((~s.channel_mask(m)).sum()) for m in members}) == 1
    s.reset()


def test_recurrent_plan_with_unequal_group_values_is_made_consistent():
    s = PruningSession(Recurrent(nn.LSTM).eval(), scope="structured", criterion="l2_filter")
    plan = s.plan.with_(sparsity={**s.plan.sparsity, "rnn.weight_ih_l1": 0.2, "rnn.weight_hh_l1": 0.6})
    s.apply_plan(plan)
    assert s.layer_sparsity("rnn.weight_ih_l1") == s.layer_sparsity("rnn.weight_hh_l1") == pytest.approx(0.2)


def test_attention_heads_are_structured_units():
    model = Attention().eval()
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    name = "encoder.layers.0.self_attn.in_proj_weight"
    t = s.target(name)
    assert (t.kind, t.gates, t.unit_size, t.channels, t.unit) == ("MultiheadAttention", 3, 4, 4, "head")
    assert "encoder.layers.0.self_attn.out_proj.weight" in s.names
    x = torch.randn(3, 5, 16)
    s.set_sparsity(name, 0.5)  # two of four heads
    keep = s.channel_mask(name)
    assert int((~keep).sum()) == 2
    rows = unit_rows(keep, t)
    w = s.model.get_parameter(name)
    assert bool((w[~rows] == 0).all()) and bool((s.model.get_parameter("encoder.layers.0.self_attn.in_proj_bias")[~rows] == 0).all())
    # a zeroed head contributes nothing: the layer equals one whose out_proj ignores that head's columns
    attn = model.encoder.layers[0].self_attn
    with torch.no_grad():
        y, _ = attn(x, x, x, need_weights=False)
        ref = attn.out_proj.weight.clone()
        cols = expand_channel_mask(keep, t)[: attn.embed_dim, 0]  # the q block's rows = the heads' columns
        attn.out_proj.weight.mul_(cols.float()[None, :])
        y2, _ = attn(x, x, x, need_weights=False)
        attn.out_proj.weight.copy_(ref)
        out = model(x)
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-6)
    assert torch.isfinite(out).all()
    s.reset()
    assert torch.equal(s.model.get_parameter(name), s.original(name))


def test_every_criterion_and_scope_is_exact_on_rnn_and_attention_models():
    for model in (Recurrent(nn.LSTM, bidirectional=True).eval(), Attention().eval()):
        x = torch.randn(8, 5, 6 if isinstance(model, Recurrent) else 16)
        calib = [(x, torch.randint(0, 2, (8,)))]
        s = PruningSession(model, calib_data=calib)
        for crit in CRITERIA:
            if crit == "bn_scale":
                continue  # no BatchNorm in these models
            s.set_criterion(crit)
            for scope in ("layer", "global", "structured"):
                s.set_scope(scope)
                s.set_global_sparsity(0.4)
                for t in s.targets:
                    if not s.supported(t.name):
                        assert s.zeros(t.name) == 0  # e.g. Wanda has no score for recurrent weights: dense
                        continue
                    if scope == "layer":
                        assert s.zeros(t.name) == round(0.4 * t.numel)
                    if scope == "structured" and t.name not in s.output_layers:
                        assert s.zeros(t.name) == round(0.4 * t.channels) * t.channel_size
                if scope == "global":
                    pool = sum(t.numel for t in s.targets if s.supported(t.name))
                    assert sum(s.zeros(t.name) for t in s.targets) == round(0.4 * pool)
        s.reset()


def test_tied_and_shared_tensors_are_one_target_counted_once():
    model = Tied().eval()
    s = PruningSession(model, embeddings=True)
    assert s.names == ["embed.weight", "mix.weight"]  # decoder.weight is embed.weight
    total = sum(p.numel() for p in model.parameters())
    assert s.summary().prunable_params <= total
    assert s.summary().total_params == total
    assert "the same tensor as embed.weight" in s.excluded["decoder.weight"]
    s.set_global_sparsity(0.5)
    assert torch.equal(model.decoder.weight, model.embed.weight)  # pruned once, seen through both names


def test_excluded_names_every_parameter_left_out():
    s = PruningSession(Tied().eval())
    assert "embed.weight" not in s.names
    assert "opt in with embeddings=True" in s.excluded["embed.weight"]
    assert s.excluded["mix.bias"].startswith("bias")
    seen = set(s.names) | set(s.excluded)
    assert seen == {n for n, _ in Tied().named_parameters(remove_duplicate=False)}
    torchvision = pytest.importorskip("torchvision")
    vit = torchvision.models.vit_b_16(weights=None, image_size=32)
    sv = PruningSession(vit)
    attn = [n for n in sv.names if n.endswith("in_proj_weight")]
    assert len(attn) == 12  # every block's packed q, k, v projection is a target now
    assert "token" in sv.excluded["class_token"] and "position" in sv.excluded["encoder.pos_embedding"]
    assert any("LayerNorm" in r for r in sv.excluded.values())
    covered = sum(sv.target(n).numel for n in sv.names)
    params = sum(p.numel() for p in vit.parameters())
    assert covered / params > 0.98
