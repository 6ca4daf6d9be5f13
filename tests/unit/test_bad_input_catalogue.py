"""The catalogue of bad input: one row per mistake a user can make, the exact error class it gets and the
shape of its message. Every error is a PrunevizError subclass that names the cause and the way out, and
afterwards the session (plan, generation, history), the model's weights (bit for bit) and the user's files are
exactly as before. README's "Bad input" section lists the same rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import pruneviz as pv
from pruneviz.core import (
    CheckpointError,
    CriterionError,
    EvaluationError,
    InvalidSparsityError,
    NonFiniteWeightsError,
    NoPrunableTensorsError,
    PrunevizError,
    RecipeMismatchError,
    UnknownLayerError,
)
from pruneviz.core.evaluate import Evaluator
from pruneviz.data import digits_tensors, load_demo_model
from pruneviz.data.models import UnknownDemoError


@dataclass
class Env:
    """What a case may touch: a demo-CNN session pruned to 30 % (global), its data, a folder of the user's files."""

    session: pv.PruningSession
    x: torch.Tensor
    y: torch.Tensor
    tmp: Path

    @property
    def model(self) -> nn.Module:
        return self.session.model


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _nan_model() -> nn.Module:
    m = load_demo_model("cnn")
    with torch.no_grad():
        m.features[0].weight[0, 0, 0, 0] = float("nan")
    return m


def _write(env: Env, name: str, data: bytes | str) -> Path:
    p = env.tmp / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


# (id, what the user does, the error class, a regex of its message)
CASES = [
    # ------------------------------------------------------------------ the session
    ("layer-name-not-a-string", lambda e: e.session.set_sparsity(3, 0.5), UnknownLayerError, r"strings such as"),
    ("unknown-layer", lambda e: e.session.set_sparsity("features.9.weight", 0.5), UnknownLayerError,
     r"Did you mean"),
    ("sparsity-above-1", lambda e: e.session.set_global_sparsity(1.5), InvalidSparsityError, r"\[0, 1\]"),
    ("sparsity-nan", lambda e: e.session.set_global_sparsity(float("nan")), InvalidSparsityError, r"\[0, 1\]"),
    ("sparsity-bool", lambda e: e.session.set_global_sparsity(True), InvalidSparsityError, r"a bool.*1\.0"),
    ("sparsity-text", lambda e: e.session.set_sparsity("features.0.weight", "half"), InvalidSparsityError,
     r"number in \[0, 1\]"),
    ("unknown-scope", lambda e: e.session.set_scope("everything"), PrunevizError, r"unknown scope.*layer, global"),
    ("unknown-criterion", lambda e: e.session.set_criterion("magnitud"), CriterionError, r"Did you mean: 'magnitude'"),
    ("gradients-without-data", lambda e: e.session.set_criterion("saliency"), CriterionError,
     r"needs gradients.*calib_data"),
    ("wanda-without-data", lambda e: e.session.set_criterion("wanda"), CriterionError, r"needs calibration data"),
    ("bn-scale-without-batchnorm", lambda e: pv.PruningSession(load_demo_model("mlp"), criterion="bn_scale"),
     CriterionError, r"BatchNorm.*l1_filter"),
    ("model-not-a-module", lambda e: pv.PruningSession({"w": torch.ones(3)}), PrunevizError, r"not a torch\.nn\.Module"),
    ("nothing-to-prune", lambda e: pv.PruningSession(nn.Sequential(nn.ReLU())), NoPrunableTensorsError,
     r"Linear, Conv"),
    ("include-matches-nothing", lambda e: pv.PruningSession(load_demo_model("cnn"), include=["layer4.*"]),
     UnknownLayerError, r"matches no prunable tensor"),
    ("include-not-a-name", lambda e: pv.PruningSession(load_demo_model("cnn"), include=[3]), UnknownLayerError,
     r"give layer names"),
    ("nan-weights", lambda e: pv.PruningSession(_nan_model()), NonFiniteWeightsError, r"features\.0\.weight"),
    ("seed-not-a-number", lambda e: pv.PruningSession(load_demo_model("cnn"), seed="one"), PrunevizError,
     r"seed must be a whole number"),
    ("unknown-engine", lambda e: pv.PruningSession(load_demo_model("cnn"), engine="fast"), PrunevizError,
     r"engine='fast'"),
    ("plan-with-unknown-layer", lambda e: e.session.apply_plan(e.session.plan.with_(sparsity={"fc9.weight": 0.5})),
     UnknownLayerError, r"not a prunable tensor"),
    ("protect-unknown-layer", lambda e: e.session.protect(["head.*"]), UnknownLayerError, r"matches no prunable"),
    # ------------------------------------------------------------------ calibration data
    ("calibration-that-does-not-fit",
     lambda e: pv.PruningSession(load_demo_model("cnn"), calib_data=[(torch.randn(4, 3, 8, 8), e.y[:4])],
                                 criterion="saliency"),
     CriterionError, r"calibration batch 0.*3 channels"),
    ("calibration-not-pairs", lambda e: pv.PruningSession(load_demo_model("cnn"), calib_data=[e.x[:4], e.x[4:8], e.x[8:12]]),
     EvaluationError, r"\(inputs, targets\) pairs"),
    # ------------------------------------------------------------------ recipes, checkpoints, files
    ("recipe-missing", lambda e: pv.load_recipe(e.tmp / "nope.json"), CheckpointError, r"no file at"),
    ("recipe-not-json", lambda e: pv.load_recipe(_write(e, "bad.json", "{nope")), CheckpointError, r"not a JSON file"),
    ("recipe-not-a-recipe", lambda e: pv.load_recipe(_write(e, "other.json", '{"a": 1}')), CheckpointError,
     r"not a pruneviz recipe"),
    ("recipe-too-new", lambda e: pv.load_recipe(_write(e, "new.json", json.dumps(
        {**pv.make_recipe(e.session), "version": 99}))), CheckpointError, r"version 99"),
    ("recipe-for-another-model", lambda e: pv.apply_recipe_to_session(
        pv.PruningSession(load_demo_model("mlp")), pv.make_recipe(e.session)), RecipeMismatchError,
     r"made for 'DigitsCNN'.*Nothing was changed"),
    ("checkpoint-corrupt", lambda e: pv.load_checkpoint(_write(e, "broken.pt", b"not a zip")), CheckpointError,
     r"not a readable PyTorch checkpoint"),
    ("checkpoint-with-code", lambda e: pv.load_checkpoint(_pickled(e)), CheckpointError, r"weights_only"),
    ("save-into-a-folder", lambda e: pv.save_recipe(e.session, e.tmp), CheckpointError, r"is a folder"),
    ("save-under-a-file", lambda e: pv.save_recipe(e.session, _write(e, "notes.txt", "mine") / "r.json"),
     CheckpointError, r"is a file, not a folder"),
    ("save-into-a-missing-folder", lambda e: pv.export_pruned_model(e.session, e.tmp / "a" / "b" / "m.pt"),
     CheckpointError, r"does not exist"),
    ("export-unknown-form", lambda e: pv.export_pruned_model(e.session, e.tmp / "m.pt", form="zip"), PrunevizError,
     r"unknown export form 'zip'"),
    # ------------------------------------------------------------------ evaluation data
    ("data-as-a-dict", lambda e: Evaluator(e.model, {"x": e.x, "y": e.y}), EvaluationError,
     r"type dict is not supported"),
    ("inputs-and-targets-differ", lambda e: Evaluator(e.model, (e.x[:20], e.y[:19])), EvaluationError,
     r"20 inputs but 19 targets"),
    ("data-empty", lambda e: Evaluator(e.model, (e.x[:0], e.y[:0])), EvaluationError, r"is empty"),
    ("labels-beyond-the-classes", lambda e: Evaluator(e.model, (e.x[:8], torch.arange(8) + 5)), EvaluationError,
     r"labels range from 5 to 12.*10 classes"),
    ("inputs-of-the-wrong-shape", lambda e: Evaluator(e.model, (torch.randn(8, 3, 8, 8), e.y[:8])),
     EvaluationError, r"3 channels.*takes 1"),
    ("float-labels", lambda e: Evaluator(e.model, (e.x[:8], e.y[:8].float())), EvaluationError,
     r"nothing to measure.*task='regression'"),
    ("subset-size-zero", lambda e: Evaluator(e.model, (e.x, e.y), subset_size=0), EvaluationError, r"subset_size=0"),
    ("unknown-task", lambda e: Evaluator(e.model, (e.x, e.y), task="segmentation"), EvaluationError,
     r"unknown task 'segmentation'"),
    ("metric-that-raises", lambda e: Evaluator(e.model, (e.x, e.y), metric_fn=lambda o, t: 1 / 0), EvaluationError,
     r"your metric_fn raised ZeroDivisionError"),
    ("nan-inputs", lambda e: Evaluator(e.model, (e.x[:8] * float("nan"), e.y[:8])), EvaluationError,
     r"NaN or inf: 8 of 8 samples"),
    ("tuple-outputs", lambda e: Evaluator(nn.Sequential(e.model, _Pair()), (e.x, e.y)), EvaluationError,
     r"pass output=0"),
    # ------------------------------------------------------------------ long jobs
    ("sweep-without-levels", lambda e: pv.sensitivity_sweep(e.session, (e.x, e.y), levels=[], executor="inline"),
     PrunevizError, r"levels is empty"),
    ("finetune-negative-epochs", lambda e: pv.finetune(e.session, (e.x, e.y), epochs=-1), PrunevizError,
     r"epochs must be a whole number"),
    ("finetune-bad-lr", lambda e: pv.finetune(e.session, (e.x, e.y), epochs=1, lr=-1.0), PrunevizError,
     r"lr must be a positive number"),
    ("schedule-without-training-data", lambda e: pv.run_schedule(e.session, None, 0.5), PrunevizError,
     r"needs train_data"),
    # ------------------------------------------------------------------ the smaller model
    ("slim-with-an-input-that-does-not-fit", lambda e: pv.slim(e.session, torch.randn(1, 3, 32, 32)), PrunevizError,
     r"example input"),
    # ------------------------------------------------------------------ the explorer and the app's demos
    ("explorer-unknown-sample-view", lambda e: pv.explore(e.session, (e.x, e.y), show="3d"), PrunevizError,
     r"show='3d'.*image, spectrogram, text, table"),
    ("unknown-demo-model", lambda e: pv.explore("cnx"), UnknownDemoError, r"Did you mean: 'cnn'"),
]


class _Pair(nn.Module):
    def forward(self, x):
        return x, x.detach()


def _pickled(env: Env) -> Path:
    import pickle

    p = env.tmp / "model.pt"
    with open(p, "wb") as f:
        pickle.dump({"code": _Pair()}, f)
    return p


def make_env(folder: Path) -> Env:
    """A demo-CNN session at 30 %, the test digits and a folder holding one of the user's files (also used by
    scripts/catalogue_table.py, which prints README's table)."""
    x, y = digits_tensors("test")
    s = pv.PruningSession(load_demo_model("cnn"), scope="global")
    s.set_global_sparsity(0.3)
    (folder / "keep.txt").write_text("the user's own file")
    return Env(s, x, y, folder)


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


def test_the_catalogue_has_at_least_forty_rows():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "do", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(env, case, do, error, message):
    s = env.session
    weights = {k: v.clone() for k, v in s.model.state_dict().items()}
    plan, generation, history = s.plan, s.generation, (len(s.history), s.history_position)
    files = _files(env.tmp)
    with pytest.raises(error, match=message) as raised:
        do(env)
    assert isinstance(raised.value, PrunevizError), type(raised.value).__mro__
    assert "Traceback" not in str(raised.value) and len(str(raised.value)) < 1200
    assert all(torch.equal(v, s.model.state_dict()[k]) for k, v in weights.items()), "the weights changed"
    assert (s.plan, s.generation, (len(s.history), s.history_position)) == (plan, generation, history)
    new = {k: v for k, v in _files(env.tmp).items() if k not in files}
    assert {k: files[k] for k in files} == {k: _files(env.tmp)[k] for k in files}, "a user's file changed"
    assert all(not Path(k).name.startswith(".") for k in new), f"a temporary file was left: {new}"
