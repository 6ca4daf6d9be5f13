"""Recipe round trip and export in torch.nn.utils.prune form / permanent; atomic writes."""

import copy

import pytest
import torch
from torch.nn.utils import prune

from pruneviz.core import (
    CheckpointError,
    PruningSession,
    apply_recipe,
    export_pruned_model,
    load_checkpoint,
    load_recipe,
    pruned_copy,
    save_recipe,
)


@pytest.mark.parametrize("scope", ["layer", "global", "structured"])
@pytest.mark.parametrize("criterion", ["magnitude", "random", "l2_filter", "bn_scale"])
def test_recipe_round_trip_gives_identical_masks(tiny_cnn, tmp_path, scope, criterion):
    fresh = copy.deepcopy(tiny_cnn)
    s = PruningSession(tiny_cnn, criterion=criterion, scope=scope, seed=7)
    s.set_global_sparsity(0.45)
    if scope != "global":
        s.set_sparsity("features.0.weight", 0.25)
    path = save_recipe(s, tmp_path / "recipe.json")
    s2 = apply_recipe(fresh, load_recipe(path))
    for n in s.names:
        assert torch.equal(s.mask(n), s2.mask(n)), n
    for (k, v), (k2, v2) in zip(tiny_cnn.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_export_in_torch_prune_form(tiny_cnn, tmp_path):
    s = PruningSession(tiny_cnn, scope="global")
    s.set_global_sparsity(0.6)
    m = pruned_copy(s, "torch_prune")
    for t in s.targets:
        module = m.get_submodule(t.module_name)
        assert torch.equal(module.weight_mask.bool(), s.mask(t.name))
        assert torch.equal(module.weight_orig, s.original(t.name))
        prune.remove(module, "weight")
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(m(x), tiny_cnn(x))
    path = export_pruned_model(s, tmp_path / "pruned.pt")
    sd = load_checkpoint(path)
    assert "features.0.weight_orig" in sd and "features.0.weight_mask" in sd


def test_export_permanent_and_structured_bias(tiny_cnn, tmp_path):
    s = PruningSession(tiny_cnn, scope="structured", criterion="l1_filter")
    s.set_global_sparsity(0.5)
    path = export_pruned_model(s, tmp_path / "perm.pt", form="permanent")
    sd = load_checkpoint(path)
    for k, v in tiny_cnn.state_dict().items():
        assert torch.equal(sd[k], v)
    m = pruned_copy(s, "torch_prune")
    assert hasattr(m.features[0], "bias_mask")
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(m(x), tiny_cnn(x), atol=1e-6)


def test_failed_export_leaves_existing_file_intact(tiny_cnn, tmp_path, monkeypatch):
    s = PruningSession(tiny_cnn)
    target = tmp_path / "model.pt"
    target.write_bytes(b"precious")

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"nothing was written to .*model\.pt \(disk full\)"):
        export_pruned_model(s, target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    with pytest.raises(CheckpointError, match="does not exist"):
        export_pruned_model(s, tmp_path / "nope" / "m.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        save_recipe(s, tmp_path)
