import pytest
from torch import nn

from pruneviz.core import NoPrunableTensorsError, UnknownLayerError, find_targets


def test_finds_every_kind_with_stable_names(tiny_cnn, tiny_rnn):
    names = [t.name for t in find_targets(tiny_cnn)]
    assert names == ["features.0.weight", "features.3.weight", "features.6.weight", "classifier.weight"]
    convt = find_targets(tiny_cnn)[2]
    assert convt.kind == "ConvTranspose2d" and convt.channel_dim == 1 and convt.channels == 6
    rnn = {t.name: t for t in find_targets(tiny_rnn)}
    assert {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "gru.weight_hh_l0_reverse", "head.weight"} <= set(rnn)
    assert "embed.weight" not in rnn  # embeddings are not default targets
    assert not any("bias" in n for n in rnn)
    assert rnn["lstm.weight_hh_l0"].shape == (64, 16)


def test_include_exclude_by_name_pattern_and_type(tiny_cnn):
    assert [t.name for t in find_targets(tiny_cnn, include=["features.*"])] == [
        "features.0.weight", "features.3.weight", "features.6.weight"]
    assert [t.name for t in find_targets(tiny_cnn, exclude=[nn.Linear, "features.6"])] == [
        "features.0.weight", "features.3.weight"]


def test_no_prunable_tensors_and_unknown_names(tiny_cnn):
    with pytest.raises(NoPrunableTensorsError, match="no prunable tensors"):
        find_targets(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(UnknownLayerError, match="Did you mean"):
        find_targets(tiny_cnn, include=["clasifier"])
    with pytest.raises(NoPrunableTensorsError, match="leave no prunable tensor"):
        find_targets(tiny_cnn, include=["features.*"], exclude=["features.*"])
