"""Object detection through the task seam: live mAP equals torchmetrics', progressive results converge, a
torchvision detector works through the same API, pruning keeps the detector runnable, bad input is named."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pruneviz.core import CRITERIA, EvaluationError, PruningSession, finetune
from pruneviz.core.evaluate import Evaluator
from pruneviz.core.live import LiveEvaluator
from pruneviz.data.detector import load_shapes_detector
from pruneviz.data.shapes import load_shapes_split, make_shapes

CHUNKS = {"first_chunk": 48, "chunk_size": 128}


@pytest.fixture(scope="module")
def test_split():
    s = load_shapes_split("test")
    return s.images, s.targets


@pytest.fixture(scope="module")
def calib():
    extra = make_shapes(64, seed=11)
    return [(extra.images[i:i + 16], extra.targets[i:i + 16]) for i in range(0, 64, 16)]


def reference_map(predictions, targets):
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(backend="faster_coco_eval", class_metrics=True)
    metric.update([{k: torch.as_tensor(v) for k, v in p.items()} for p in predictions], targets)
    return metric.compute()


def check_against_reference(result, targets):
    ref = reference_map(result.predictions, targets)
    assert result.metrics["map50"] == pytest.approx(float(ref["map_50"]), abs=1e-6)
    assert result.metrics["map"] == pytest.approx(float(ref["map"]), abs=1e-6)
    assert result.metrics["map75"] == pytest.approx(float(ref["map_75"]), abs=1e-6)
    classes = ref["classes"].tolist()
    per_class = result.details["per_class_map"]
    for c, v in zip(classes, ref["map_per_class"].tolist(), strict=True):
        if v < 0:
            assert np.isnan(per_class[c]) if c < len(per_class) else True
        else:
            assert per_class[c] == pytest.approx(v, abs=1e-6)


def test_map_equals_torchmetrics_at_several_sparsities(test_split, one_intra_op_thread):
    model = load_shapes_detector()
    ev = Evaluator(model, test_split, **CHUNKS)
    assert ev.task.name == "detection" and ev.baseline.value == ev.baseline.metrics["map50"]
    s = PruningSession(model, scope="global")
    for scope, sparsity in [("global", 0.0), ("global", 0.5), ("global", 0.75), ("structured", 0.25)]:
        s.set_scope(scope)
        s.set_global_sparsity(sparsity)
        check_against_reference(ev.evaluate(model), ev.y)


def test_map_matches_coco_on_edge_cases():
    """Hand-made predictions that exercise COCO's rules: ties, duplicates, more than 100 boxes, a class
    without ground truth, an image without objects, no predictions at all."""
    from pruneviz.core.tasks import DetectionTask
    from pruneviz.core.tasks.detection import _DetectionAccumulator

    g = torch.Generator().manual_seed(0)
    targets, preds = [], []
    for i in range(12):
        k = int(torch.randint(0, 4, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + 8 + torch.rand(k, 2, generator=g) * 16], 1)
        labels = torch.randint(0, 3, (k,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
        if i == 3:
            preds.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)})
            continue
        jitter = boxes + torch.randn(k, 4, generator=g) * 2
        dup = boxes.clone()  # exact duplicates with equal scores: ties
        noise_xy = torch.rand(120 if i == 5 else 5, 2, generator=g) * 50
        noise = torch.cat([noise_xy, noise_xy + 6], 1)
        pb = torch.cat([jitter, dup, noise])
        ps = torch.cat([torch.rand(k, generator=g), torch.full((k,), 0.5), torch.rand(len(noise), generator=g) * 0.6])
        pl = torch.cat([labels, labels, torch.randint(0, 4, (len(noise),), generator=g)])  # class 3 has no gt
        preds.append({"boxes": pb, "scores": ps, "labels": pl})
    task = DetectionTask(num_classes=4)
    task.num_classes, task.total = 4, len(targets)
    acc = _DetectionAccumulator(task)
    acc.add(preds, targets)
    result = acc.result(len(targets), 0.0)
    check_against_reference(result, targets)


def test_progressive_results_converge_to_the_final_value(test_split, one_intra_op_thread):
    model = load_shapes_detector()
    ev = Evaluator(model, test_split, subset_size=200, **CHUNKS)
    steps = list(ev.run(model))
    assert [r.n for r in steps] == [48, 176, 200]
    assert steps[-1].final and steps[-1].metrics == ev.evaluate(model).metrics
    for r in steps:
        lo, hi = r.value_ci
        assert lo <= r.value <= hi
    assert ev.baseline.changed is None
    s = PruningSession(model, scope="global")
    s.set_global_sparsity(0.8)
    pruned = ev.evaluate(model)
    assert pruned.value < ev.baseline.value and len(pruned.changed) > 0
    lost = [len(ev.baseline.details["found"][i] - pruned.details["found"][i]) for i in pruned.changed]
    assert sum(lost) > 0


def test_torchvision_detector_through_the_same_api(test_split):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=5).eval()
    images, targets = test_split
    data = (list(images[:6]), [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets[:6]])
    ev = Evaluator(model, data, first_chunk=3, chunk_size=3)
    assert ev.task.name == "detection" and ev.task.model_classes == 5
    s = PruningSession(model, scope="global")
    s.set_global_sparsity(0.5)
    r = ev.evaluate(model)
    assert r.final and 0.0 <= r.value <= 1.0
    s.set_scope("structured")
    s.set_global_sparsity(0.3)
    assert ev.evaluate(model).final
    s.reset()


def test_every_criterion_and_scope_on_the_detector(calib):
    model = load_shapes_detector()
    s = PruningSession(model, calib_data=calib, protect=["heatmap", "box"])
    assert s.output_layers == ("heatmap.weight", "box.weight")
    x = calib[0][0][:2]
    for crit in CRITERIA:
        s.set_criterion(crit)
        for scope in ("layer", "global", "structured"):
            s.set_scope(scope)
            s.set_global_sparsity(0.4)
            summ = s.summary()
            if scope == "global":
                assert s.plan.global_sparsity == 0.4
            if scope == "structured":
                assert all(s.layer_sparsity(n) == 0.0 for n in s.output_layers)
            assert summ.pruned_params > 0
            with torch.no_grad():
                out = model(x)
            assert len(out) == 2 and all(torch.isfinite(o["boxes"]).all() for o in out)
    s.reset()


def test_finetune_a_pruned_detector_keeps_its_masks(calib):
    model = load_shapes_detector()
    s = PruningSession(model, scope="structured", criterion="l1_filter")
    s.set_global_sparsity(0.25)
    masks = {n: m.clone() for n, m in s.masks.items()}
    images = torch.cat([b[0] for b in calib])
    targets = [t for b in calib for t in b[1]]
    r = finetune(s, (images, targets), epochs=1, batch_size=16, num_threads=1)
    assert r.steps_done == 4 and np.isfinite(r.history[0].train_loss)
    for n, m in masks.items():
        assert torch.equal(s.mask(n), m)
        assert bool((s.model.get_parameter(n)[~m] == 0).all())


def test_burst_of_1000_changes_on_the_detector(test_split):
    model = load_shapes_detector()
    images, targets = test_split
    session = PruningSession(model, scope="global")
    live = LiveEvaluator(session, (images[:60], targets[:60]), first_chunk=20, chunk_size=20)
    rng = random.Random(0)
    try:
        assert live.wait_idle(60)
        for i in range(1000):
            if i % 3:
                session.set_global_sparsity(rng.uniform(0.0, 0.9))
            else:
                session.set_sparsity(rng.choice(session.names), rng.uniform(0.0, 0.9))
        assert live.wait_idle(60) and live.last_error is None
        final = live.latest_final
        assert final.generation == session.generation
        ref = Evaluator(model, (images[:60], targets[:60]), first_chunk=20, chunk_size=20).evaluate(model)
        assert final.metrics == ref.metrics
    finally:
        live.close()


def _bad(test_split, **change):
    images, targets = test_split
    images, targets = images[:8].clone(), [dict(t) for t in targets[:8]]
    return images, targets


@pytest.mark.parametrize(("case", "match"), [
    ("no_boxes", "image 2 has no 'boxes'"),
    ("no_labels", "image 2 has no 'labels'"),
    ("flipped", r"x2 < x1"),
    ("outside", "outside the image"),
    ("nan_box", "NaN or infinite box"),
    ("label_range", "label 7, but the detector predicts 4 classes"),
    ("empty", "is empty"),
    ("not_dicts", "needs \\(inputs, targets\\) pairs|one dict per image"),
])
def test_bad_detection_data(test_split, case, match):
    model = load_shapes_detector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = test_split
    images, targets = images[:8], [dict(t) for t in targets[:8]]
    if case == "no_boxes":
        del targets[2]["boxes"]
    elif case == "no_labels":
        del targets[2]["labels"]
    elif case == "flipped":
        b = targets[2]["boxes"].clone()
        b[0, 2] = b[0, 0] - 3
        targets[2]["boxes"] = b
    elif case == "outside":
        targets[2]["boxes"] = targets[2]["boxes"] + 100
    elif case == "nan_box":
        b = targets[2]["boxes"].clone()
        b[0, 1] = float("nan")
        targets[2]["boxes"] = b
    elif case == "label_range":
        targets[2]["labels"] = torch.full_like(targets[2]["labels"], 7)
    elif case == "empty":
        images, targets = images[:0], []
    elif case == "not_dicts":
        targets = [t["boxes"] for t in targets]
    with pytest.raises(EvaluationError, match=match):
        Evaluator(model, (images, targets))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_detector_outputs_that_are_not_box_dicts(test_split):
    images, targets = test_split[0][:4], test_split[1][:4]
    model = load_shapes_detector()

    class Raw(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner.heads(x)

    with pytest.raises(EvaluationError, match="returned a tensor.*not one dict of boxes"):
        Evaluator(Raw(), (images, targets), task="detection")

    class NaNScores(Raw):
        def forward(self, x):
            out = self.inner(x)
            out[0]["scores"] = out[0]["scores"] * float("nan")
            return out

    with pytest.raises(EvaluationError, match="NaN or infinite boxes or scores"):
        Evaluator(NaNScores(), (images, targets))
