"""The report: its files and what they hold, the CLI, bad input (nothing half-written), the user file format,
and (slow) the full demo-CNN report with a headless-Chromium screenshot in test-artifacts/."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import pytest
import torch

from pruneviz.cli import main
from pruneviz.core import CheckpointError
from pruneviz.core.report import ReportError
from pruneviz.core.report_inputs import file_input, load_model_file, save_data, save_model
from pruneviz.data.models import DigitsMLP
from pruneviz.report import make_report

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")
ROOT = Path(__file__).resolve().parents[2]
SMALL = {"criteria": ("magnitude", "random", "lamp", "wanda"), "sparsities": (0.5, 0.9), "seeds": 2}


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "cnn"
    return make_report("cnn", out=out, **SMALL)


def test_the_folder_holds_the_four_files(small_report):
    r = small_report
    assert sorted(p.name for p in r.folder.iterdir()) == ["latency.csv", "report.html", "results.csv", "summary.md"]
    assert not [p for p in r.folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    rows = list(csv.DictReader(io.StringIO((r.folder / "results.csv").read_text())))
    assert len(rows) == 4 * 3 * 2 * 2  # criterion x scope x sparsity x seed
    assert {row["criterion"] for row in rows} == set(SMALL["criteria"]) and {row["seed"] for row in rows} == {"0", "1"}
    for row in rows:
        assert float(row["compression"]) == pytest.approx(int(row["params_total"]) / int(row["params_nonzero"]))
        assert float(row["speedup"]) == pytest.approx(int(row["flops_dense"]) / int(row["flops_sparse"]))
        if row["scope"] == "structured":
            assert float(row["speedup_slim"]) == pytest.approx(int(row["flops_dense"]) / int(row["flops_slim"]))
        else:
            assert row["flops_slim"] == ""
    lat = list(csv.DictReader(io.StringIO((r.folder / "latency.csv").read_text())))
    assert lat and all(r_["scope"] == "structured" and float(r_["speedup"]) > 0 for r_ in lat)
    assert r.speeds and all(s.dense_ms > 0 for s in r.speeds.values())


def test_summary_uses_shrinkbenchs_definitions(small_report):
    md = (small_report.folder / "summary.md").read_text()
    assert "parameters / nonzero parameters" in md and "FLOPs with zeros skipped" in md
    assert "## Gap to the random baseline" in md and "## Mask agreement with magnitude" in md
    assert re.search(r"\| magnitude \| global \| [\d.]+ ± 0\.0 \|", md)  # mean ± sd over seeds
    assert "98.6" in md  # the unpruned accuracy of the demo CNN


def test_html_is_self_contained(small_report):
    page = (small_report.folder / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 8
    assert "<script" not in page and "<link" not in page and "src=" not in page  # nothing to fetch
    assert len(page.encode()) < 400_000
    for c in SMALL["criteria"]:
        assert c in page


def test_an_existing_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    kw = {"criteria": ("magnitude",), "sparsities": (0.5,), "seeds": 1, "scopes": ("global",), "latency": False}
    with pytest.raises(ReportError, match="--overwrite"):
        make_report("cnn", out=out, **kw)
    assert (out / "keep.txt").read_text() == "mine"
    r = make_report("cnn", out=out, overwrite=True, **kw)
    assert not (out / "keep.txt").exists() and (out / "report.html").exists() and r.notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary or old folder left


def test_nothing_half_written_on_error(tmp_path, monkeypatch):
    import pruneviz.report as rep

    def boom(data):
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(rep, "render_html", boom)
    with pytest.raises(RuntimeError, match="renderer"):
        rep.make_report("cnn", out=tmp_path / "rep", criteria=("magnitude",), sparsities=(0.5,), seeds=1,
                        scopes=("global",), latency=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_report(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["report", "--model", "cnn", "--out", str(out), "--criteria", "magnitude,lamp", "--scopes", "global",
               "--sparsities", "0.5,0.8", "--seeds", "2", "--no-latency", "--quiet"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {r["criterion"] for r in rows} == {"magnitude", "random", "lamp"}  # baselines always included


@pytest.mark.parametrize("argv, message", [
    (["--model", "cnnn"], "Did you mean: 'cnn'"),
    (["--model", "cnn", "--sparsities", "0.5,1.5"], r"\[0, 1\]"),
    (["--model", "cnn", "--seeds", "0"], "at least one seed"),
    (["--model", "cnn", "--criteria", "magnitud"], "Did you mean: 'magnitude'"),
    (["--model", "cnn", "--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler answers"),
    (["--checkpoint", "x.pt"], "--checkpoint PATH and --data PATH"),
])
def test_cli_bad_input_is_refused_quickly(tmp_path, capsys, argv, message):
    t0 = time.perf_counter()
    rc = main(["report", *argv, "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2 and time.perf_counter() - t0 < 8
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "f.txt").write_text("x")
    assert main(["report", "--model", "cnn", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_user_model_and_data_files(tmp_path, capsys, digits):
    torch.manual_seed(0)
    model = DigitsMLP().eval()
    save_model(model, tmp_path / "m.pt")
    x, y = digits
    save_data(tmp_path / "d.pt", x, y)  # no calibration tensors
    loaded = load_model_file(tmp_path / "m.pt")
    assert type(loaded) is DigitsMLP
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    inp = file_input(tmp_path / "m.pt", tmp_path / "d.pt")
    assert inp.calib is None and len(inp.data[0]) == len(x)
    rc = main(["report", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(tmp_path / "d.pt"), "--out",
               str(tmp_path / "r"), "--scopes", "global", "--sparsities", "0.5", "--seeds", "1", "--no-latency",
               "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "wanda left out" in err and "bn_scale left out" in err
    # a criterion that needs calibration data, asked for explicitly, without it: a clear error, nothing written
    rc = main(["report", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(tmp_path / "d.pt"), "--out",
               str(tmp_path / "r2"), "--criteria", "wanda", "--quiet"])
    assert rc == 2 and "calibration data" in capsys.readouterr().err and not (tmp_path / "r2").exists()


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_files_that_are_not_plain_tensors_are_refused(tmp_path):
    torch.save({"format": "pruneviz-model/1", "constructor": "x:Y", "state_dict": {}, "payload": Evil()},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model_file(tmp_path / "evil.pt")
    torch.save({"format": "pruneviz-model/1", "constructor": "__main__:Net", "state_dict": {}}, tmp_path / "main.pt")
    with pytest.raises(CheckpointError, match="not importable"):
        load_model_file(tmp_path / "main.pt")
    with pytest.raises(CheckpointError, match="script, notebook"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "l.pt", constructor="__main__:Net")


@pytest.mark.slow
def test_cli_on_a_dask_local_cluster_gives_the_in_process_csv(tmp_path):
    """`pruneviz report --scheduler ADDRESS` against a LocalCluster of two worker processes (one thread each)."""
    distributed = pytest.importorskip("distributed")
    args = ["--model", "cnn", "--criteria", "magnitude,random,taylor,wanda", "--scopes", "global,structured",
            "--sparsities", "0.3,0.7", "--seeds", "2", "--no-latency", "--quiet"]
    assert main(["report", *args, "--out", str(tmp_path / "inline")]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        assert main(["report", *args, "--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]) == 0
    inline = (tmp_path / "inline" / "results.csv").read_text()
    assert len(inline.splitlines()) == 1 + 4 * 2 * 2 * 2
    assert (tmp_path / "dask" / "results.csv").read_text() == inline
    assert "Dask scheduler" in (tmp_path / "dask" / "summary.md").read_text()
