"""Every bad input gets a clear error, and the session and model are exactly as before."""

import math

import pytest
import torch
from torch import nn

from pruneviz.core import (
    CheckpointError,
    CriterionError,
    InvalidSparsityError,
    NonFiniteWeightsError,
    NoPrunableTensorsError,
    PruningSession,
    RecipeMismatchError,
    UnknownLayerError,
    apply_recipe,
    apply_recipe_to_session,
    load_checkpoint,
    load_recipe,
    make_recipe,
)


class ForeignObject:
    """Not a tensor: torch.load(weights_only=True) must refuse it."""


def state(s):
    return (s.plan, s.generation, s.history_position, {k: v.clone() for k, v in s.model.state_dict().items()})


def assert_unchanged(s, before):
    plan, gen, pos, weights = before
    assert s.plan == plan and s.generation == gen and s.history_position == pos
    for k, v in s.model.state_dict().items():
        assert torch.equal(v, weights[k]), k


@pytest.fixture
def pruned(tiny_cnn):
    s = PruningSession(tiny_cnn)
    s.set_sparsity("features.3.weight", 0.4)
    return s


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, "half", None])
def test_sparsity_outside_range_names_layer_and_value(pruned, value):
    before = state(pruned)
    with pytest.raises(InvalidSparsityError, match=r"features\.0\.weight.*\[0, 1\]"):
        pruned.set_sparsity("features.0.weight", value)
    with pytest.raises(InvalidSparsityError, match="global slider"):
        pruned.set_global_sparsity(value)
    assert_unchanged(pruned, before)


def test_unknown_layer_suggests_close_names(pruned):
    before = state(pruned)
    with pytest.raises(UnknownLayerError, match=r"Did you mean: 'features\.3\.weight'"):
        pruned.set_sparsity("features.3.weights", 0.5)
    with pytest.raises(UnknownLayerError):
        pruned.set_sparsities({"features.0.weight": 0.2, "nope": 0.1})
    assert_unchanged(pruned, before)


def test_model_with_no_prunable_tensors():
    with pytest.raises(NoPrunableTensorsError, match="Linear, Conv"):
        PruningSession(nn.Sequential(nn.ReLU()))


def test_criterion_without_data_or_batchnorm(pruned):
    before = state(pruned)
    with pytest.raises(CriterionError, match="needs gradients.*calib_data"):
        pruned.set_criterion("saliency")
    with pytest.raises(CriterionError, match="unknown criterion 'magnitud'.*Did you mean"):
        pruned.set_criterion("magnitud")
    assert_unchanged(pruned, before)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    s = PruningSession(mlp)
    s.set_global_sparsity(0.3)
    before = state(s)
    with pytest.raises(CriterionError, match="BatchNorm.*l1_filter"):
        s.set_criterion("bn_scale")
    assert_unchanged(s, before)


def test_bn_scale_refuses_a_layer_without_batchnorm(tiny_cnn):
    s = PruningSession(tiny_cnn, criterion="bn_scale")
    assert s.supported("features.0.weight") and not s.supported("classifier.weight")
    before = state(s)
    with pytest.raises(CriterionError, match="classifier.weight"):
        s.set_sparsity("classifier.weight", 0.5)
    assert_unchanged(s, before)


def test_nan_or_inf_weights(tiny_cnn):
    with torch.no_grad():
        tiny_cnn.features[3].weight[0, 0, 0, 0] = math.nan
    with pytest.raises(NonFiniteWeightsError, match=r"features\.3\.weight"):
        PruningSession(tiny_cnn)


def test_recipe_for_another_architecture_lists_mismatches_and_leaves_model_untouched(pruned, tiny_rnn):
    recipe = make_recipe(pruned)
    before = {k: v.clone() for k, v in tiny_rnn.state_dict().items()}
    with pytest.raises(RecipeMismatchError, match="in the recipe, not in the model") as err:
        apply_recipe(tiny_rnn, recipe)
    assert "Nothing was changed" in str(err.value)
    for k, v in tiny_rnn.state_dict().items():
        assert torch.equal(v, before[k])
    other = PruningSession(nn.Sequential(nn.Conv2d(1, 9, 3)))
    bad = dict(recipe, tensors={"0.weight": [8, 1, 3, 3]})
    snap = state(other)
    with pytest.raises(RecipeMismatchError, match=r"recipe \(8, 1, 3, 3\) vs model \(9, 1, 3, 3\)"):
        apply_recipe_to_session(other, bad)
    assert_unchanged(other, snap)


def test_corrupt_or_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")

    foreign = tmp_path / "foreign.pt"
    torch.save({"obj": ForeignObject()}, foreign)  # arbitrary pickled objects are refused (weights_only)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(foreign)
    notjson = tmp_path / "recipe.json"
    notjson.write_text("{ nope")
    with pytest.raises(CheckpointError, match="not a JSON file"):
        load_recipe(notjson)
    notrecipe = tmp_path / "other.json"
    notrecipe.write_text('{"a": 1}')
    with pytest.raises(CheckpointError, match="not a pruneviz recipe"):
        load_recipe(notrecipe)
