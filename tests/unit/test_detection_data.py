"""Tests for the offline detection demo: shapes set, ShapesDetector + checkpoint, COCO folder loader."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pruneviz.core.errors import EvaluationError, PrunevizError
from pruneviz.data.coco import CocoDetection, DatasetError, collate_detection
from pruneviz.data.detector import (
    DETECTOR_CHECKPOINT,
    ShapesDetector,
    detector_checkpoint_meta,
    load_shapes_detector,
)
from pruneviz.data.models import DemoCheckpointError
from pruneviz.data.shapes import SHAPES_CLASSES, SPLIT_SIZES, load_shapes_split, make_shapes

MAP50_FLOOR = 0.95  # measured 0.9865 (mAP@[.5:.95] 0.8246) for the committed checkpoint
MAP_FLOOR = 0.75


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_split():
    return load_shapes_split("test")


@pytest.fixture(scope="module")
def detector():
    return load_shapes_detector()


# ----------------------------------------------------------------------------- shapes data


def _check_set(data, n, size):
    assert len(data) == n
    assert data.images.shape == (n, 3, size, size) and data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    assert len(data.targets) == n
    for t in data.targets:
        boxes, labels = t["boxes"], t["labels"]
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(labels) == len(boxes)
        assert 1 <= len(labels) <= 5
        assert bool((boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all())
        assert float(boxes.min()) >= 0 and float(boxes.max()) <= size
        side = boxes[:, 2:] - boxes[:, :2]
        assert float(side.min()) >= 7.9 and float(side.max()) <= 24.1
        assert int(labels.min()) >= 0 and int(labels.max()) < len(SHAPES_CLASSES)


def test_make_shapes_format_and_determinism():
    a, b, c = make_shapes(40, seed=5), make_shapes(40, seed=5), make_shapes(40, seed=6)
    _check_set(a, 40, 64)
    assert torch.equal(a.images, b.images)
    assert all(
        torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["labels"], y["labels"])
        for x, y in zip(a.targets, b.targets, strict=True)
    )
    assert not torch.equal(a.images, c.images)
    _check_set(make_shapes(5, seed=1, size=96), 5, 96)
    counts = [len(t["labels"]) for t in make_shapes(200, seed=0).targets]
    assert np.mean([k >= 2 for k in counts]) > 0.6  # several objects per image
    with pytest.raises(ValueError, match="size >= 32"):
        make_shapes(3, seed=0, size=8)


def test_objects_are_visible_and_not_hidden():
    data = make_shapes(100, seed=3)
    for img, t in zip(data.images, data.targets, strict=True):
        boxes = t["boxes"]
        # no object is mostly covered by another: pairwise intersection / smaller area stays small
        lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
        rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
        ratio = inter / torch.minimum(area[:, None], area[None, :])
        ratio.fill_diagonal_(0)
        assert float(ratio.max()) <= 0.16
        # the object differs from the image around it (it was painted)
        for b in boxes.round().long().tolist():
            patch = img[:, b[1] : b[3], b[0] : b[2]]
            assert float(patch.std()) > 0.02


def test_generation_speed_and_splits():
    t0 = time.perf_counter()
    make_shapes(1000, seed=11)
    assert time.perf_counter() - t0 < 5.0
    train, test = load_shapes_split("train"), load_shapes_split("test")
    assert load_shapes_split("test") is test  # cached
    assert len(train) == SPLIT_SIZES["train"] and len(test) == SPLIT_SIZES["test"]
    assert train.seed != test.seed
    assert not torch.equal(train.images[: len(test)], test.images)
    assert not torch.equal(load_shapes_split("test", seed=1).images, test.images)
    with pytest.raises(ValueError, match="Unknown shapes split"):
        load_shapes_split("val")
    batches = list(test.batches(128))
    assert [len(b[0]) for b in batches] == [128, 128, 44]
    assert sum(len(b[1]) for b in batches) == 300
    image, target = test[0]
    assert image.shape == (3, 64, 64) and set(target) == {"boxes", "labels"}


# ----------------------------------------------------------------------------- detector


def test_eval_output_format(detector, test_split):
    images = test_split.images[:6]
    with torch.no_grad():
        out = detector(images)
    assert isinstance(out, list) and len(out) == 6
    for d in out:
        assert set(d) == {"boxes", "scores", "labels"}
        k = len(d["scores"])
        assert 0 < k <= 100
        assert d["boxes"].shape == (k, 4) and d["boxes"].dtype == torch.float32
        assert d["scores"].dtype == torch.float32 and d["labels"].dtype == torch.int64
        assert bool((d["scores"][:-1] >= d["scores"][1:]).all())
        assert float(d["scores"].min()) >= detector.score_threshold
        assert float(d["boxes"].min()) >= 0 and float(d["boxes"].max()) <= 64
        assert int(d["labels"].min()) >= 0 and int(d["labels"].max()) < len(SHAPES_CLASSES)
    with torch.no_grad():
        as_list = detector(list(images))  # torchvision-style list of (3, H, W)
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(out, as_list, strict=True))
    assert detector.heads(images).shape == (6, len(SHAPES_CLASSES) + 4, 16, 16)
    # an untrained model in eval mode still answers in the same format (maybe with 0 detections)
    fresh = ShapesDetector().eval()
    fresh.score_threshold = 0.99
    empty = fresh(images[:2])
    assert empty[0]["boxes"].shape == (0, 4) and empty[0]["labels"].dtype == torch.int64


def test_train_mode_losses_are_finite_and_differentiable(test_split):
    torch.manual_seed(0)
    model = ShapesDetector().train()
    images, targets = next(test_split.batches(4))
    targets = list(targets)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}  # no objects
    losses = model(images, targets)
    assert set(losses) == {"heatmap", "box"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.box.weight.grad.abs().sum()) > 0 and float(model.heatmap.weight.grad.abs().sum()) > 0
    # no targets at all: the box loss is zero but still part of the graph
    none = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    empty = model(images[:2], none)
    assert float(empty["box"].detach()) == 0 and torch.isfinite(empty["heatmap"])
    sum(empty.values()).backward()
    # train mode without targets answers with detections, like torchvision
    assert isinstance(model(images[:2]), list)


@pytest.mark.parametrize(
    "bad, expected",
    [
        (torch.rand(3, 64, 64), r"\(3, 64, 64\)"),
        (torch.rand(2, 1, 64, 64), r"\(2, 1, 64, 64\)"),
        ([torch.rand(3, 64, 64), torch.rand(3, 32, 32)], "one size"),
        ([torch.rand(64, 64)], r"\(64, 64\)"),
        ("images", "str"),
        ([], "list"),
    ],
)
def test_bad_images_raise_evaluation_error(bad, expected):
    model = ShapesDetector().eval()
    with pytest.raises(EvaluationError, match=expected) as info:
        model(bad)
    assert "(N, 3, H, W)" in str(info.value)


def test_bad_targets_raise_evaluation_error():
    model = ShapesDetector().train()
    images = torch.rand(2, 3, 64, 64)
    good = {"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([0])}
    with pytest.raises(EvaluationError, match="2 images but 1 targets"):
        model(images, [good])
    with pytest.raises(EvaluationError, match="labels outside"):
        model(images, [good, {"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([9])}])


def test_committed_checkpoint_meta_and_map(detector, test_split):
    meta = detector_checkpoint_meta()
    assert meta["seed"] == 0 and meta["classes"] == list(SHAPES_CLASSES) and meta["image_size"] == 64
    assert meta["map50"] >= MAP50_FLOOR and meta["map"] >= MAP_FLOOR
    assert not detector.training
    assert 80_000 <= sum(p.numel() for p in detector.parameters()) <= 130_000
    assert all(
        not isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or type(m) is torch.nn.BatchNorm2d
        for m in detector.modules()
    )
    from pruneviz.data.train_detector import evaluate_map

    scores = evaluate_map(detector, test_split)
    assert scores["map50"] >= MAP50_FLOOR and scores["map"] >= MAP_FLOOR
    assert scores["map50"] == pytest.approx(meta["map50"], abs=0.01)
    # an untrained model is far below: the metric can fail
    assert evaluate_map(ShapesDetector(), make_shapes(40, seed=9))["map50"] < 0.2


def test_checkpoint_errors(tmp_path):
    with pytest.raises(DemoCheckpointError, match="not found"):
        load_shapes_detector(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DemoCheckpointError, match="corrupt"):
        load_shapes_detector(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"arch": "DigitsCNN", "state_dict": {}}, foreign)
    with pytest.raises(DemoCheckpointError, match="DigitsCNN"):
        load_shapes_detector(foreign)
    wrong = tmp_path / "wrong.pt"
    torch.save({"arch": "ShapesDetector", "state_dict": {"x": torch.zeros(1)}}, wrong)
    with pytest.raises(DemoCheckpointError, match="does not fit"):
        load_shapes_detector(wrong)
    ckpt = torch.load(DETECTOR_CHECKPOINT, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == "ShapesDetector" and {"map50", "map", "epochs", "train_seconds"} <= set(
        ckpt["meta"]
    )


def test_torch_pruning_removes_a_quarter_of_backbone_channels(detector, test_split):
    import copy

    import torch_pruning as tp

    model = copy.deepcopy(detector).eval()
    example = torch.rand(1, 3, 64, 64)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    before = sum(p.numel() for p in model.parameters())
    for block in model.backbone:
        conv = block[0]
        idxs = list(range(0, conv.out_channels, 4))  # 25 %
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs)
        assert graph.check_pruning_group(group)
        group.prune()
    widths = [block[0].out_channels for block in model.backbone]
    assert widths == [12, 24, 24, 48, 48, 48]
    assert sum(p.numel() for p in model.parameters()) < 0.65 * before
    assert model.heatmap.out_channels == len(SHAPES_CLASSES) and model.box.out_channels == 4
    out = model(test_split.images[:4])
    assert len(out) == 4 and all(d["boxes"].shape[1] == 4 for d in out)
    assert model.heads(test_split.images[:4]).shape == (4, len(SHAPES_CLASSES) + 4, 16, 16)
    # the original is untouched and torch.fx traces the raw graph
    assert detector.backbone[0][0].out_channels == 16
    torch.fx.symbolic_trace(detector.backbone)


def test_torchvision_detector_follows_the_same_convention(test_split):
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=len(SHAPES_CLASSES) + 1
    ).eval()
    images = list(test_split.images[:2])
    with torch.inference_mode():
        theirs = model(images)
        ours = load_shapes_detector()(images)
    for out in (theirs, ours):
        assert isinstance(out, list) and len(out) == 2
        for d in out:
            assert set(d) == {"boxes", "scores", "labels"}
            assert d["boxes"].dtype == torch.float32 and d["boxes"].shape[1] == 4
            assert d["scores"].dtype == torch.float32 and d["labels"].dtype == torch.int64


# ----------------------------------------------------------------------------- COCO folder


def _write_coco(root: Path, *, annotations=None, images=None, categories=None) -> tuple[Path, Path]:
    from PIL import Image

    img_dir = root / "images"
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = {"a.png": (40, 30), "b.png": (40, 30), "c.png": (50, 20)}  # (width, height)
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(img_dir / name)
    doc = {
        "images": images
        if images is not None
        else [
            {"id": i + 1, "file_name": n, "width": w, "height": h}
            for i, (n, (w, h)) in enumerate(sizes.items())
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 20, 20]},
            {"id": 3, "image_id": 3, "category_id": 7, "bbox": [0, 0, 50, 20]},
            {"id": 4, "image_id": 3, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 1},
        ],
        "categories": categories
        if categories is not None
        else [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    ann = root / "instances.json"
    ann.write_text(json.dumps(doc))
    return img_dir, ann


def test_coco_loader_items_labels_and_resize(tmp_path):
    img_dir, ann = _write_coco(tmp_path)
    ds = CocoDetection(img_dir, ann)
    assert len(ds) == 3 and ds.classes == ["cat", "dog"]  # sorted by category id: 3, 7
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert torch.equal(target["boxes"], torch.tensor([[2.0, 3, 12, 8], [20, 10, 40, 30]]))
    assert target["labels"].tolist() == [1, 0] and target["labels"].dtype == torch.int64
    assert ds[1][1]["boxes"].shape == (0, 4) and ds[1][1]["labels"].shape == (0,)
    assert ds[2][1]["labels"].tolist() == [1]  # the crowd annotation is skipped
    images, targets = collate_detection([ds[0], ds[1], ds[2]])
    assert isinstance(images, list) and len(targets) == 3  # sizes differ
    resized = CocoDetection(img_dir, ann, size=(60, 80))
    image, target = resized[0]
    assert image.shape == (3, 60, 80)
    assert torch.allclose(target["boxes"], torch.tensor([[4.0, 6, 24, 16], [40, 20, 80, 60]]))
    batch_images, _ = collate_detection([resized[0], resized[2]])
    assert isinstance(batch_images, torch.Tensor) and batch_images.shape == (2, 3, 60, 80)
    out = load_shapes_detector()(batch_images)  # a user's folder feeds the demo detector
    assert len(out) == 2


def test_coco_loader_bad_inputs(tmp_path):
    img_dir, ann = _write_coco(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDetection(tmp_path / "nope", ann)
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDetection(img_dir, tmp_path / "nope.json")
    notjson = tmp_path / "bad.json"
    notjson.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoDetection(img_dir, notjson)
    notjson.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        CocoDetection(img_dir, notjson)

    def build(**kwargs):
        sub = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        sub.mkdir()
        return CocoDetection(*_write_coco(sub, **kwargs))

    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "missing.png", "width": 40, "height": 30},
    ]
    with pytest.raises(DatasetError, match="missing.png"):
        build(images=images, annotations=[{"id": 1, "image_id": 2, "category_id": 7, "bbox": [1, 1, 5, 5]}])
    for bbox, what in [
        ([1, 1, 0, 5], "non-positive"),
        ([1, 1, 5, -2], "non-positive"),
        ([30, 1, 20, 5], "outside"),
        ([-3, 1, 5, 5], "outside"),
        ([1, 1, 5], "4 numbers"),
    ]:
        with pytest.raises(DatasetError, match=what):
            build(annotations=[{"id": 9, "image_id": 1, "category_id": 7, "bbox": bbox}])
    with pytest.raises(DatasetError, match="unknown category_id 5"):
        build(annotations=[{"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match="image_id 42"):
        build(annotations=[{"id": 9, "image_id": 42, "category_id": 7, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match="outside"):
        build(images=[{"id": 1, "file_name": "../a.png", "width": 40, "height": 30}], annotations=[])
    with pytest.raises(DatasetError, match="width"):
        build(images=[{"id": 1, "file_name": "a.png"}], annotations=[])
    with pytest.raises(DatasetError, match="size must be"):
        CocoDetection(img_dir, ann, size=(0, 4))
    # an image whose real size disagrees with the JSON fails when read, naming both sizes
    wrong = build(images=[{"id": 1, "file_name": "c.png", "width": 40, "height": 30}], annotations=[])
    with pytest.raises(DatasetError, match="50x20"):
        wrong[0]
    assert issubclass(DatasetError, PrunevizError)
