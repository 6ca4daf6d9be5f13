"""Structured scope with coupled channels: layers tied by a residual add prune the same channels, so the
physically smaller model can drop the residual stream too (the speed-up the issue asks for)."""

from __future__ import annotations

import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.removal import slim


@pytest.fixture(scope="module")
def example():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_resnet_residual_writers_prune_the_same_channels(resnet18, example):
    s = PruningSession(resnet18, criterion="l1_filter", scope="structured", example_input=example)
    s.set_global_sparsity(0.5)
    assert len(s.coupled) == 4  # the residual stream of each of ResNet-18's four stages
    stage1 = next(g for g in s.coupled if "conv1.weight" in g)
    assert {"conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight"} <= set(stage1)
    for group in s.coupled:
        masks = [s.channel_mask(n) for n in group]
        assert all(torch.equal(m, masks[0]) for m in masks)
        assert int((~masks[0]).sum()) == round(0.5 * len(masks[0]))
    s.set_sparsity("layer2.0.conv2.weight", 0.25)  # one member moved: its whole group follows
    group = s.unit_group("layer2.0.conv2.weight")
    assert len(group) == 3 and {s.layer_sparsity(n) for n in group} == {0.25}
    s.set_global_sparsity(0.5)
    r = slim(s, example)
    assert r.kept == [] and r.outputs_match
    assert r.macs_after / r.macs_before < 0.3  # uncoupled, the residual stream stays: ~0.46


def test_without_an_example_input_layers_rank_alone(resnet18, example):
    s = PruningSession(resnet18, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    assert s.coupled == []
    masks = [s.channel_mask(n) for n in ("conv1.weight", "layer1.0.conv2.weight")]
    assert not torch.equal(*masks)
    assert s.couple_channels(example) and torch.equal(s.channel_mask("conv1.weight"),
                                                      s.channel_mask("layer1.0.conv2.weight"))
    s.reset()
    assert all(torch.equal(s.model.get_parameter(n), s.original(n)) for n in s.names)
