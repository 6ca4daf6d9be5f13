"""The slim model saved as plain data reloads in a fresh process; ONNX Runtime agrees with PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import pruneviz.core.files as files
from pruneviz.core import PruningSession
from pruneviz.core.errors import CheckpointError, RecipeMismatchError
from pruneviz.core.removal import slim
from pruneviz.core.slim_export import FORMAT, OnnxExportError, export_onnx, load_slim, save_slim
from pruneviz.data import DigitsCNN, load_demo_model

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _out(model, x):
    with torch.inference_mode():
        return model.eval()(x)


@pytest.fixture(scope="module")
def slim_cnn():
    from pruneviz.data import digits_tensors

    x, _ = digits_tensors("test")
    s = PruningSession(load_demo_model("cnn"), criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    return s, slim(s, x[:1]), x[:16]


@pytest.fixture(scope="module")
def slim_resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    s = PruningSession(model, criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    x = torch.randn(2, 3, 64, 64)
    return slim(s, x[:1]), x


def test_reload_in_a_fresh_process(tmp_path, slim_cnn, slim_resnet):
    s, cnn, x_cnn = slim_cnn
    res, x_res = slim_resnet
    save_slim(cnn, tmp_path / "cnn.pt", arch=DigitsCNN)
    save_slim(res, tmp_path / "resnet.pt", arch="torchvision.models:resnet18", arch_kwargs={"num_classes": 10})
    torch.save({"cnn": (x_cnn, _out(cnn.model, x_cnn)), "resnet": (x_res, _out(res.model, x_res))},
               tmp_path / "expected.pt")
    script = textwrap.dedent(
        """
        import sys, torch
        from pruneviz.core.slim_export import load_slim
        folder = sys.argv[1]
        expected = torch.load(folder + "/expected.pt", weights_only=True)
        for name in ("cnn", "resnet"):
            raw = torch.load(f"{folder}/{name}.pt", weights_only=True)  # plain data: no pickled classes
            assert raw["format"] == "pruneviz-slim-model" and raw["history"], name
            model = load_slim(f"{folder}/{name}.pt")
            x, want = expected[name]
            with torch.inference_mode():
                got = model(x)
            print(name, float((got - want).abs().max()), sum(p.numel() for p in model.parameters()))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict((ln.split()[0], ln.split()[1:]) for ln in done.stdout.split("\n") if ln)
    assert float(lines["cnn"][0]) == 0.0 and float(lines["resnet"][0]) == 0.0
    assert int(lines["cnn"][1]) == cnn.params_after and int(lines["resnet"][1]) == res.params_after


def test_save_a_session_directly_and_reload_with_build(tmp_path, slim_cnn):
    s, cnn, x = slim_cnn
    save_slim(s, tmp_path / "s.pt", arch=None, example_input=x[:1])
    with pytest.raises(CheckpointError, match="build="):
        load_slim(tmp_path / "s.pt")
    model = load_slim(tmp_path / "s.pt", build=DigitsCNN)
    assert torch.equal(_out(model, x), _out(cnn.model, x))


def test_reload_into_the_wrong_architecture(tmp_path, slim_cnn):
    _, cnn, _ = slim_cnn
    save_slim(cnn, tmp_path / "cnn.pt", arch=DigitsCNN)
    with pytest.raises(RecipeMismatchError, match="same unpruned architecture"):
        load_slim(tmp_path / "cnn.pt", build=lambda: DigitsCNN(num_classes=3))


def test_a_file_cannot_make_load_slim_call_arbitrary_functions(tmp_path):
    torch.save({"format": FORMAT, "version": 1, "arch": {"spec": "os:system", "kwargs": {"command": "echo hi"}},
                "input": {"shape": [1, 1, 8, 8], "dtype": "float32"}, "history": [], "state_dict": {}},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="neither an nn.Module class nor a torchvision model builder"):
        load_slim(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not importable"):
        save_slim(None, tmp_path / "x.pt", arch="os:system")  # refused before anything is slimmed or written
    assert not (tmp_path / "x.pt").exists()


def test_foreign_and_corrupt_files(tmp_path):
    torch.save(DigitsCNN().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a slim model"):
        load_slim(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_slim(tmp_path / "junk.pt")


def test_bad_paths_raise_checkpoint_errors_and_write_nothing(tmp_path, slim_cnn, monkeypatch):
    _, cnn, x = slim_cnn
    (tmp_path / "afile").write_text("x")
    for bad, words in [(tmp_path, "is a folder"), (tmp_path / "missing" / "m.pt", "does not exist"),
                       (tmp_path / "afile" / "m.pt", "cannot write")]:
        with pytest.raises(CheckpointError, match=words):
            save_slim(cnn, bad, arch=DigitsCNN)
        with pytest.raises(CheckpointError, match=words):
            export_onnx(cnn.model, x[:1], bad)
    target = tmp_path / "keep.pt"
    target.write_bytes(b"old")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)
    for call in (lambda: save_slim(cnn, target, arch=DigitsCNN), lambda: export_onnx(cnn.model, x[:1], target, exporter="legacy")):
        with pytest.raises(CheckpointError, match="Permission denied"):
            call()
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "keep.pt"]


def test_onnx_runtime_equals_pytorch(tmp_path, slim_cnn, slim_resnet):
    _, cnn, x_cnn = slim_cnn
    res, x_res = slim_resnet
    import onnxruntime as ort

    for result, x, exporter in [(cnn, x_cnn, "dynamo"), (res, x_res, "legacy")]:
        e = export_onnx(result.model, x[:1], tmp_path / f"{exporter}.onnx", exporter=exporter)
        assert e.exporter == exporter and e.max_abs_diff <= 1e-4 and e.path.exists()
        sess = ort.InferenceSession(str(e.path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]  # a larger batch: dynamic batch axis
        assert got.shape[0] == len(x)
        assert float((torch.from_numpy(got) - _out(result.model, x)).abs().max()) <= 1e-4


class SVD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return torch.linalg.svd(self.conv(x).reshape(-1, 4, 4)).S


def test_unsupported_operator_is_named(tmp_path):
    with pytest.raises(OnnxExportError, match="unsupported operator.*linalg_svd"):
        export_onnx(SVD(), torch.randn(1, 1, 4, 4), tmp_path / "svd.onnx", exporter="legacy")
    assert not (tmp_path / "svd.onnx").exists()


# ------------------------------------------------------------------ the architecture named by itself, bytes
def test_arch_auto_reloads_demo_and_torchvision_models_in_a_fresh_process(tmp_path):
    from pruneviz.data.demos import DEMOS

    jobs = {}
    (ids, _), _ = DEMOS["text_gru"].data()
    text = PruningSession(load_demo_model("text_gru"), scope="structured", embeddings=True)
    detector_images = DEMOS["detector"].data()[0][0][:2]
    detector = PruningSession(load_demo_model("detector"), scope="structured", criterion="l1_filter")
    torch.manual_seed(0)
    resnet = PruningSession(torchvision.models.resnet18(weights=None, num_classes=10).eval(), scope="structured",
                            criterion="l1_filter")
    for name, s, x in [("text", text, ids[:8]), ("detector", detector, detector_images),
                       ("resnet", resnet, torch.randn(2, 3, 32, 32))]:
        s.set_global_sparsity(0.5)
        r = slim(s, x[:1])
        assert r.outputs_match and r.removed, name
        save_slim(s, tmp_path / f"{name}.pt", arch="auto", example_input=x[:1])
        out = _out(r.model, x)
        jobs[name] = (x, out if isinstance(out, torch.Tensor) else torch.cat([d["boxes"].flatten() for d in out]))
    torch.save(jobs, tmp_path / "expected.pt")
    script = textwrap.dedent(
        """
        import sys, torch
        import pruneviz
        folder = sys.argv[1]
        expected = torch.load(folder + "/expected.pt", weights_only=True)
        for name, (x, want) in expected.items():
            raw = torch.load(f"{folder}/{name}.pt", weights_only=True)
            model = pruneviz.load_slim(f"{folder}/{name}.pt")
            with torch.inference_mode():
                got = model(x)
            if not isinstance(got, torch.Tensor):
                got = torch.cat([d["boxes"].flatten() for d in got])
            print(name, raw["arch"]["spec"], float((got - want).abs().max()))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {ln.split()[0]: ln.split()[1:] for ln in done.stdout.split("\n") if ln}
    assert lines["text"][0] == "pruneviz.data.modality_models:TextGRU"
    assert lines["detector"][0] == "pruneviz.data.detector:ShapesDetector"
    assert lines["resnet"][0] == "torchvision.models:resnet18"
    assert all(float(v[1]) == 0.0 for v in lines.values()), lines


class NeedsArgs(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3)
        self.fc = nn.Linear(width, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_arch_that_cannot_be_named_says_why(tmp_path):
    from pruneviz.core.removal_arch import find_architecture

    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

    assert "cannot import" in find_architecture(Local()).reason
    arch = find_architecture(NeedsArgs(6))
    assert not arch.found and "arguments" in arch.reason
    m = NeedsArgs(6)
    m.width = 6  # an attribute of the same name is enough
    assert find_architecture(m).kwargs == {"width": 6}
    s = PruningSession(NeedsArgs(6), scope="structured")
    s.set_global_sparsity(0.5)
    with pytest.raises(CheckpointError, match="cannot name the architecture.*arch=MyModel"):
        save_slim(s, tmp_path / "m.pt", arch="auto", example_input=torch.randn(1, 1, 5, 5))
    with pytest.raises(Exception, match="arch='auto' needs the session"):
        save_slim(slim(s, torch.randn(1, 1, 5, 5)), tmp_path / "m.pt", arch="auto")
    assert not (tmp_path / "m.pt").exists()


def test_slim_bytes_are_checked_by_reloading_and_onnx_takes_token_ids(slim_cnn):
    import io

    from pruneviz.core.slim_export import onnx_bytes, slim_bytes
    from pruneviz.data.demos import DEMOS

    s, cnn, x = slim_cnn
    data = slim_bytes(cnn, s.model, x[:1])
    raw = torch.load(io.BytesIO(data), weights_only=True)
    assert raw["arch"]["spec"] == "pruneviz.data.models:DigitsCNN" and torch.equal(raw["example"], x[:1])
    assert torch.equal(_out(load_slim(io.BytesIO(data)), x), _out(cnn.model, x))
    (ids, _), _ = DEMOS["text_gru"].data()
    text = PruningSession(load_demo_model("text_gru"), scope="structured")
    text.set_global_sparsity(0.5)
    small = slim(text, ids[:1]).model
    blob, info = onnx_bytes(small, ids[:1], exporter="legacy")
    assert info.path is None and info.max_abs_diff <= 1e-4 and len(blob) > 1000
