"""Every data form users bring gives the same evaluation (and calibration) as the equivalent tensors; data
that cannot be read gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pruneviz.core import CriterionError, EvaluationError, PruningSession
from pruneviz.core.batches import as_batches, as_samples
from pruneviz.core.evaluate import Evaluator
from pruneviz.data import load_demo_model

KW = {"subset_size": 200, "seed": 3, "first_chunk": 40, "chunk_size": 64}


class DictInput(nn.Module):
    """The demo CNN behind a forward that takes the batch dict (``model(batch)``, batch["pixels"])."""

    def __init__(self) -> None:
        super().__init__()
        self.net = load_demo_model("cnn")

    def forward(self, batch):
        return self.net(batch["pixels"])


class KwargsInput(nn.Module):
    """Hugging Face style: keyword arguments named like the batch's keys."""

    def __init__(self) -> None:
        super().__init__()
        self.net = load_demo_model("cnn")

    def forward(self, pixel_values, scale=None):
        return self.net(pixel_values * (1.0 if scale is None else scale[:, None, None, None]))


class HFOutput(dict):
    """A dict-like model output with ``logits`` (as transformers' ModelOutput)."""


class LogitsDict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = load_demo_model("cnn")

    def forward(self, x):
        return HFOutput(logits=self.net(x), hidden=torch.zeros(len(x), 3))


class ItemDataset(Dataset):
    """Items as dicts with a label key, collated by the default collate into a dict batch."""

    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"pixels": self.x[i], "labels": self.y[i]}


def same(a, b) -> None:
    assert a.accuracy == b.accuracy and a.n == b.n
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert a.loss == pytest.approx(b.loss, rel=1e-6)


@pytest.fixture(scope="module")
def reference(digits):
    cnn = load_demo_model("cnn")
    ev = Evaluator(cnn, digits, **KW)
    return ev, [r for r in ev.run(cnn)]


def test_tensor_forms_and_numpy_arrays(digits, reference):
    x, y = digits
    ref, steps = reference
    cnn = load_demo_model("cnn")
    for data in [(x.numpy(), y.numpy()), [x, y], TensorDataset(x, y),
                 DataLoader(TensorDataset(x, y), batch_size=37, shuffle=True, drop_last=True),
                 [(x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50)],
                 ((x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50))]:  # a generator of batches
        ev = Evaluator(cnn, data, **KW)
        got = list(ev.run(cnn))
        assert [r.n for r in got] == [r.n for r in steps]
        for a, b in zip(got, steps, strict=True):
            same(a, b)


def test_dict_inputs_kwargs_inputs_and_logits_outputs(digits, reference):
    x, y = digits
    ref, _ = reference
    same(Evaluator(DictInput(), ({"pixels": x}, y), **KW).baseline, ref.baseline)
    loader = DataLoader(ItemDataset(x, y), batch_size=64)  # dict batches holding their labels
    same(Evaluator(DictInput(), loader, **KW).baseline, ref.baseline)
    same(Evaluator(DictInput(), [{"pixels": x[:180], "labels": y[:180]}, {"pixels": x[180:], "labels": y[180:]}],
                   **KW).baseline, ref.baseline)
    same(Evaluator(KwargsInput(), ({"pixel_values": x, "scale": torch.ones(len(x))}, y), **KW).baseline,
         ref.baseline)
    same(Evaluator(LogitsDict(), (x, y), **KW).baseline, ref.baseline)


def test_custom_collate_and_per_batch_padding():
    """Token batches padded per batch by a collate function: pruneviz rebuilds its chunks with it."""
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 20, (int(n),), generator=g) for n in torch.randint(2, 9, (60,), generator=g)]
    labels = torch.randint(0, 3, (60,), generator=g)

    def pad(items):
        n = max(len(s) for s, _ in items)
        ids = torch.zeros(len(items), n, dtype=torch.long)
        for k, (s, _) in enumerate(items):
            ids[k, : len(s)] = s
        return ids, torch.stack([lab for _, lab in items])

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.EmbeddingBag(20, 8, padding_idx=0)
            self.head = nn.Linear(8, 3)

        def forward(self, ids):
            return self.head(self.emb(ids))

    data = list(zip(seqs, labels, strict=True))
    model = Bag().eval()
    ev = Evaluator(model, DataLoader(data, batch_size=16, collate_fn=pad), first_chunk=20, chunk_size=20)
    with torch.no_grad():
        want = torch.stack([model(s[None]).argmax(1)[0] for s in seqs])
    assert ev.baseline.accuracy == pytest.approx(float((want == labels).float().mean()))
    with pytest.raises(EvaluationError, match="different shapes beyond the batch dimension.*collate_fn"):
        Evaluator(model, list(DataLoader(data, batch_size=3, collate_fn=pad)))

    def broken(items):
        raise KeyError("no padding value")

    with pytest.raises(EvaluationError, match="collate function broken raised KeyError"):
        Evaluator(model, DataLoader(data, batch_size=16, collate_fn=broken))


def test_calibration_forms_give_the_same_saliency(digits):
    x, y = digits
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
    scores = []
    for calib in [batches, (x[:256], y[:256]), DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64),
                  [{"pixels": xb, "labels": yb} for xb, yb in batches]]:
        model = DictInput() if isinstance(calib, list) and isinstance(calib[0], dict) else load_demo_model("cnn")
        s = PruningSession(model, criterion="saliency", calib_data=calib)
        scores.append(s.scores(s.names[1]))
    for other in scores[1:]:
        torch.testing.assert_close(other, scores[0], rtol=1e-5, atol=1e-9)


def test_calibration_data_that_does_not_fit_says_so(digits):
    x, y = digits
    s = PruningSession(load_demo_model("cnn"), calib_data=[(torch.randn(8, 3, 32, 32), y[:8])])
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    with pytest.raises(CriterionError, match=r"calibration batch 0 \(inputs Tensor \(8, 3, 32, 32\).*RuntimeError"):
        s.set_criterion("saliency")
    assert all(torch.equal(v, s.model.state_dict()[k]) for k, v in before.items())
    assert s.plan.criterion == "magnitude"
    with pytest.raises(EvaluationError, match="needs \\(inputs, targets\\) pairs"):
        PruningSession(load_demo_model("cnn"), calib_data=[x[:8], x[8:16], x[16:24]])


def test_samples_and_batches_helpers(digits):
    x, y = digits
    s = as_samples([(x[:10], y[:10]), (x[10:25], y[10:25])])
    assert len(s) == 25 and torch.equal(s.inputs, x[:25])
    assert [len(b[1]) for b in as_batches((x[:150], y[:150]), batch_size=64)] == [64, 64, 22]
    assert len(as_batches((x, y), batch_size=10, limit=3)) == 3
    with pytest.raises(EvaluationError, match="20 inputs but 19 targets"):
        as_samples((x[:20], y[:19]))
    with pytest.raises(EvaluationError, match="is empty"):
        as_samples([])
