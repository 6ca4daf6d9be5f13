"""Tests for pruneviz.data: digits split, demo models/checkpoints, torchvision loaders (offline)."""

from __future__ import annotations

import hashlib
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pruneviz.data import (
    DEMO_MODELS,
    DemoCheckpointError,
    DigitsCNN,
    DigitsMLP,
    digits_tensors,
    load_demo_model,
    load_digits_split,
    load_torchvision_dataset,
)
from pruneviz.data.models import checkpoint_path, demo_checkpoint_meta

ACCURACY_FLOORS = {"cnn": 0.97, "mlp": 0.95}


# ----------------------------------------------------------------------------- digits split


def test_split_sizes_dtypes_and_classes():
    data = load_digits_split()
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert sum(sizes) == 1797
    assert sizes == pytest.approx([0.6 * 1797, 0.2 * 1797, 0.2 * 1797], abs=2)
    for ds in (data.train, data.val, data.test):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert set(y.tolist()) == set(range(10))
    assert data.classes == [str(i) for i in range(10)]


def test_split_is_deterministic_and_seed_dependent():
    a, b = load_digits_split(0), load_digits_split(0)
    for split in ("train", "val", "test"):
        for ta, tb in zip(a.get(split).tensors, b.get(split).tensors, strict=True):
            assert torch.equal(ta, tb)
    assert a.mean == b.mean and a.std == b.std
    c = load_digits_split(1)
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])
    x, y = digits_tensors("test", seed=0)
    assert torch.equal(x, a.test.tensors[0]) and torch.equal(y, a.test.tensors[1])


def test_split_is_stratified():
    data = load_digits_split()
    all_y = torch.cat([data.train.tensors[1], data.val.tensors[1], data.test.tensors[1]])
    totals = torch.bincount(all_y, minlength=10).double()
    for split, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = torch.bincount(data.get(split).tensors[1], minlength=10).double()
        assert torch.all((counts - frac * totals).abs() <= 1.5), (split, counts, frac * totals)


def test_split_is_a_partition_normalised_with_train_stats():
    from sklearn.datasets import load_digits

    data = load_digits_split()
    x_tr = data.train.tensors[0]
    assert float(x_tr.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x_tr.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    # Undo the normalisation: every split maps back to the raw 0..16 pixel grid ...
    rows = []
    for split in ("train", "val", "test"):
        raw = (data.get(split).tensors[0].double() * data.std + data.mean) * 16
        assert torch.allclose(raw, raw.round(), atol=1e-3)
        rows.append(
            np.concatenate(
                [raw.round().reshape(len(raw), -1).numpy(), data.get(split).tensors[1].numpy()[:, None]],
                axis=1,
            )
        )
    # ... and the three splits together are exactly the dataset (as a multiset of (image, label) rows).
    ours = np.concatenate(rows).astype(np.int64)
    bunch = load_digits()
    full = np.concatenate([bunch.data, bunch.target[:, None]], axis=1).astype(np.int64)
    assert np.array_equal(ours[np.lexsort(ours.T[::-1])], full[np.lexsort(full.T[::-1])])


def test_unknown_split_name():
    with pytest.raises(ValueError, match="train, val, test"):
        digits_tensors("validation")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- demo models


def test_architectures():
    cnn, mlp = DigitsCNN(), DigitsMLP()
    x = torch.randn(4, 1, 8, 8)
    assert cnn(x).shape == (4, 10) and mlp(x).shape == (4, 10)
    assert isinstance(cnn.features, nn.Sequential) and isinstance(cnn.classifier, nn.Sequential)
    feats = list(cnn.features)
    convs = [i for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert all(isinstance(feats[i + 1], nn.BatchNorm2d) for i in convs)
    assert [(m.in_features, m.out_features) for m in (mlp.fc1, mlp.fc2, mlp.fc3)] == [
        (64, 300),
        (300, 100),
        (100, 10),
    ]
    assert set(DEMO_MODELS) == {"cnn", "mlp"}


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_pretrained_checkpoints_meet_accuracy_floor(name):
    path = checkpoint_path(name)
    assert path.is_file() and path.stat().st_size < 1_000_000
    model = load_demo_model(name)
    assert not model.training
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, tensor in ckpt["state_dict"].items():
        assert tensor.dtype in (torch.float32, torch.int64), key
        assert torch.equal(model.state_dict()[key], tensor)
    x, y = digits_tensors("test", seed=ckpt["meta"]["seed"])
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).double().mean())
    assert acc >= ACCURACY_FLOORS[name]
    assert acc == pytest.approx(demo_checkpoint_meta(name)["test_accuracy"], abs=1e-6)


def test_model_aliases_and_untrained():
    assert isinstance(load_demo_model("digits_cnn"), DigitsCNN)
    assert isinstance(load_demo_model("Digits-MLP"), DigitsMLP)
    fresh = load_demo_model("mlp", pretrained=False)
    assert isinstance(fresh, DigitsMLP) and not fresh.training


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="'cnn'.*'mlp'"):
        load_demo_model("resnet50")


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "digits_cnn.pt"
    bad.write_bytes(b"this is not a torch checkpoint \x00\xff" * 10)
    with pytest.raises(DemoCheckpointError, match=r"corrupt.*python -m pruneviz\.data\.train_demo"):
        load_demo_model("cnn", checkpoint=bad)


def test_missing_checkpoint_gives_clear_error(tmp_path):
    with pytest.raises(DemoCheckpointError, match=r"not found.*python -m pruneviz\.data\.train_demo"):
        load_demo_model("cnn", checkpoint=tmp_path / "nope.pt")


def test_checkpoint_for_other_architecture(tmp_path):
    other = tmp_path / "mlp.pt"
    torch.save({"state_dict": DigitsMLP().state_dict(), "arch": "DigitsMLP", "meta": {}}, other)
    with pytest.raises(DemoCheckpointError, match="expected 'DigitsCNN'"):
        load_demo_model("cnn", checkpoint=other)
    wrong = tmp_path / "wrong_keys.pt"
    torch.save({"state_dict": DigitsMLP().state_dict(), "arch": "DigitsCNN", "meta": {}}, wrong)
    with pytest.raises(DemoCheckpointError, match="does not fit DigitsCNN"):
        load_demo_model("cnn", checkpoint=wrong)


# ----------------------------------------------------------------------------- torchvision loaders


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any socket connection or torchvision download attempt."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist
    import torchvision.datasets.utils as tv_utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for mod in (tv_utils, tv_mnist, tv_cifar):
        for fn in ("download_url", "download_and_extract_archive"):
            if hasattr(mod, fn):
                monkeypatch.setattr(mod, fn, refuse)


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def _write_fake_mnist(root: Path, folder: str, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[prefix] = labels
    return out


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_from_local_idx_files(tmp_path, no_network, name, folder):
    labels = _write_fake_mnist(tmp_path, folder)
    train = load_torchvision_dataset(name, tmp_path, train=True)
    test = load_torchvision_dataset(name, tmp_path, train=False)
    assert len(train) == 20 and len(test) == 10
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert y == int(labels["train"][3])
    assert [int(test[i][1]) for i in range(10)] == labels["t10k"].tolist()
    # download=True with the files already present must not touch the network either
    assert len(load_torchvision_dataset(name, tmp_path, train=False, download=True)) == 10


def test_mnist_normalisation(tmp_path, no_network):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", np.full((2, 28, 28), 255, dtype=np.uint8))
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", np.array([1, 2]))
    x, _ = load_torchvision_dataset("mnist", tmp_path)[0]
    assert torch.allclose(x, torch.full_like(x, (1.0 - 0.1307) / 0.3081))


def _write_fake_cifar10(root: Path, per_batch: int = 4) -> dict[str, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = {}
    for i, fname in enumerate(
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    ):
        lab = [(i + j) % 10 for j in range(per_batch)]
        entry = {
            "batch_label": fname,
            "labels": lab,
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{fname}_{j}.png" for j in range(per_batch)],
        }
        (folder / fname).write_bytes(pickle.dumps(entry, protocol=2))
        labels[fname] = lab
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return labels


def _patch_cifar_md5(monkeypatch, root: Path) -> None:
    """Point torchvision's CIFAR10 md5 lists at the files this test wrote (its real check still runs)."""
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5(n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"])})


def test_cifar10_from_local_pickle_batches(tmp_path, no_network, monkeypatch):
    labels = _write_fake_cifar10(tmp_path)
    _patch_cifar_md5(monkeypatch, tmp_path)
    train = load_torchvision_dataset("cifar10", tmp_path, train=True)
    test = load_torchvision_dataset("cifar-10", tmp_path, train=False, download=True)
    assert len(train) == 20 and len(test) == 4
    x, y = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected_train = sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert [train[i][1] for i in range(len(train))] == expected_train
    assert [test[i][1] for i in range(len(test))] == labels["test_batch"]
    assert train.classes[0] == "airplane"


def test_cifar10_md5_mismatch_is_reported(tmp_path, no_network):
    _write_fake_cifar10(tmp_path)  # real torchvision md5 lists: our fake files do not match
    with pytest.raises(RuntimeError, match="corrupted"):
        load_torchvision_dataset("cifar10", tmp_path)


@pytest.mark.parametrize(
    ("name", "folder"),
    [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_files_error_says_where_and_download(tmp_path, no_network, name, folder):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load_torchvision_dataset(name, tmp_path)
    assert str(tmp_path / folder) in str(info.value)


def test_unknown_torchvision_dataset(tmp_path):
    with pytest.raises(ValueError, match="'mnist'.*'fashion-mnist'.*'cifar10'"):
        load_torchvision_dataset("imagenet", tmp_path)


def test_stored_seed0_split_and_direct_read_match_scikit_learn():
    """The app reads the digits without importing scikit-learn; it must be exactly load_digits + its split."""
    from sklearn.datasets import load_digits

    from pruneviz.data import digits as d

    images, labels = d._raw_digits()
    bunch = load_digits()
    assert np.array_equal(images, (bunch.images / 16.0).astype(np.float32))
    assert np.array_equal(labels, bunch.target)
    stored = np.load(d._CACHED_SPLIT)
    for got, want in zip((stored[k] for k in ("train", "val", "test")), d._split(labels, 0), strict=True):
        assert np.array_equal(got, want)
