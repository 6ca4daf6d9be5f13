"""Structured scope removes channels for real: the masked model computes what the slimmed model computes."""

import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.flops import FlopsCounter, slim_copy
from pruneviz.data import digits_tensors, load_demo_model


@pytest.mark.parametrize("criterion", ["l1_filter", "bn_scale", "random"])
def test_masked_model_equals_physically_slimmed_model(criterion):
    model = load_demo_model("cnn")
    s = PruningSession(model, scope="structured", criterion=criterion)
    s.set_global_sparsity(0.5)
    x, _ = digits_tensors("test")
    slim, coupled = slim_copy(s, x[:1])
    assert coupled == []
    with torch.inference_mode():
        masked_out, slim_out = model(x), slim(x)
    assert torch.allclose(masked_out, slim_out, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    report = FlopsCounter(s, x[:1]).report()
    assert report.structured < report.dense


def test_batchnorm_scale_and_shift_follow_the_channels(tiny_cnn):
    s = PruningSession(tiny_cnn, scope="structured", criterion="l2_filter")
    assert s.batchnorm_of("features.0.weight") == "features.1"
    assert s.channel_tensors("features.0.weight") == ["features.0.bias", "features.1.weight", "features.1.bias"]
    s.set_global_sparsity(0.5)
    keep = s.channel_mask("features.0.weight")
    bn = tiny_cnn.features[1]
    assert torch.all(bn.weight[~keep] == 0) and torch.all(bn.bias[~keep] == 0)
    assert torch.equal(bn.weight[keep], s.original_tensor("features.1.weight")[keep])
    s.set_scope("global")  # leaving structured scope brings the BatchNorm back
    assert torch.equal(bn.weight, s.original_tensor("features.1.weight"))
    assert torch.equal(bn.bias, s.original_tensor("features.1.bias"))


def test_bn_scale_ranks_by_the_original_gammas_even_after_structured_pruning(tiny_cnn):
    s = PruningSession(tiny_cnn, scope="structured", criterion="bn_scale")
    s.set_global_sparsity(0.5)
    first = s.channel_mask("features.3.weight").clone()
    s.set_criterion("random")
    s.set_criterion("bn_scale")  # gammas in the model are zeroed now; scores must not change
    assert torch.equal(s.channel_mask("features.3.weight"), first)
