"""Classification through the task seam gives the results of the evaluator before the seam existed: the
reference (accuracy, loss, Wilson interval, predictions and confusion matrix hashes per progressive chunk) was
recorded with the previous wave's code on the demo models at four sparsities.

Everything discrete (counts, accuracy, interval, every prediction, the confusion matrix) must be exact. The loss
was bit-identical on the machine that recorded it; another CPU's float kernels (its BLAS takes another SIMD path)
round the logits differently in the last bits, so the loss is compared to 1e-5 relative (measured on another
CPU: up to 2.7e-6, on a small, confident loss)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pruneviz.core import PruningSession
from pruneviz.core.evaluate import Evaluator
from pruneviz.data import digits_tensors, load_demo_model

REFERENCE = json.loads((Path(__file__).parent / "data" / "classification_reference.json").read_text())
SUBSET = {"subset_size": 200, "seed": 3, "first_chunk": 40, "chunk_size": 64}


def _sha(a) -> str:
    return hashlib.sha256(np.asarray(a).astype(np.int64).tobytes()).hexdigest()


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_bit_identical_to_the_previous_evaluator(key, one_intra_op_thread):
    name, sparsity, which = key.split("|")
    model = load_demo_model(name)
    s = PruningSession(model, scope="global")
    s.set_global_sparsity(float(sparsity))
    ev = Evaluator(model, digits_tensors("test"), **(SUBSET if which == "subset" else {}))
    got = list(ev.run(model))
    want = REFERENCE[key]
    assert len(got) == len(want)
    for r, w in zip(got, want, strict=True):
        assert r.n == w["n"] and r.accuracy == w["accuracy"] and r.top5 == w["top5"]
        assert float(r.loss) == pytest.approx(float.fromhex(w["loss"]), rel=1e-5, abs=0)
        assert list(r.accuracy_ci) == w["ci"]
        assert _sha(r.predictions) == w["predictions"] and _sha(r.confusion) == w["confusion"]
    assert torch.equal(torch.as_tensor(got[-1].predictions), torch.as_tensor(ev.evaluate(model).predictions))
