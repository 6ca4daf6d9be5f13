"""Latency reports: structure, sanity and threads (no timing thresholds: the machine is shared)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from pruneviz.core import stats
from pruneviz.core.latency import LatencyError, measure_latency, measure_onnx_latency
from pruneviz.core.slim_export import export_onnx
from pruneviz.data import load_demo_model

FAST = 0.05  # seconds per measurement: enough for structure, not for figures


class ThreadSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)
        self.seen: set[int] = set()

    def forward(self, x):
        self.seen.add(torch.get_num_threads())
        self.seen.add(-1 if torch.is_inference_mode_enabled() else -2)
        return self.fc(x)


def test_report_structure_and_batch_sanity():
    model = load_demo_model("cnn").train()
    r = measure_latency(model, torch.randn(3, 1, 8, 8), batch_sizes=(1, 32), min_run_time=FAST)
    assert model.training  # mode restored
    assert r.backend == "torch" and r.threads == 1 and [row.batch_size for row in r.rows] == [1, 32]
    for row in r.rows:
        assert row.median_ms > 0 and row.iqr_ms >= 0 and row.runs >= 1 and row.threads == 1
    assert r.row(32).median_ms > r.row(1).median_ms  # 32 samples take longer than one
    assert r.row(32).per_sample_ms < r.row(1).median_ms  # ... but less than 32 single calls
    d = r.as_dict()
    assert set(d) == {"backend", "threads", "min_run_time", "b1", "b32"}
    assert set(d["b1"]) == {"median_ms", "iqr_ms", "runs", "threads"}
    with pytest.raises(KeyError, match="measured"):
        r.row(8)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_threads_are_honoured_and_restored():
    before = torch.get_num_threads()
    for n in (1, 2):
        spy = ThreadSpy()
        r = measure_latency(spy, torch.randn(1, 16), batch_sizes=(1,), threads=n, min_run_time=FAST)
        assert spy.seen == {n, -1} and r.threads == n  # every timed call: n threads, inference mode
    assert torch.get_num_threads() == before


def test_forward_fn_and_dict_inputs():
    spy = ThreadSpy()
    r = measure_latency(spy, {"x": torch.randn(2, 16)}, batch_sizes=(1, 4), min_run_time=FAST,
                        forward_fn=lambda m, b: m(b["x"]))
    assert [row.batch_size for row in r.rows] == [1, 4]


def test_onnx_latency(tmp_path):
    model = load_demo_model("mlp")
    x = torch.randn(1, 1, 8, 8)
    e = export_onnx(model, x, tmp_path / "mlp.onnx", exporter="legacy")
    r = measure_onnx_latency(e.path, x, batch_sizes=(1, 8), threads=1, min_run_time=FAST)
    assert r.backend == "onnxruntime" and r.threads == 1 and all(row.median_ms > 0 for row in r.rows)
    r2 = measure_onnx_latency(e.path.read_bytes(), x, batch_sizes=(2,), min_run_time=FAST)
    assert r2.rows[0].batch_size == 2
    fixed = export_onnx(model, x, tmp_path / "fixed.onnx", exporter="legacy", dynamic_batch=False)
    with pytest.raises(LatencyError, match="dynamic_batch=True"):
        measure_onnx_latency(fixed.path, x, batch_sizes=(4,), min_run_time=FAST)


@pytest.mark.parametrize("kwargs, words", [
    ({"batch_sizes": ()}, "positive integers"),
    ({"batch_sizes": (0,)}, "positive integers"),
    ({"threads": 0}, "positive integer"),
    ({"threads": 10_000}, "exceeds"),
    ({"min_run_time": 0}, "min_run_time"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(LatencyError, match=words):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), **kwargs)


def test_input_that_does_not_fit():
    with pytest.raises(LatencyError, match="fails on the example input"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 3), min_run_time=FAST)


def test_stats_measure_latency_still_returns_median_seconds():
    t = stats.measure_latency(nn.Linear(4, 2), torch.randn(1, 4), repeats=3, warmup=1)
    assert isinstance(t, float) and 0 < t < 1


def test_pooled_rounds():
    from pruneviz.core.latency import pooled

    model = load_demo_model("mlp")
    parts = [measure_latency(model, torch.randn(1, 1, 8, 8), batch_sizes=(1, 4), min_run_time=FAST) for _ in range(2)]
    p = pooled(parts)
    assert [r.batch_size for r in p.rows] == [1, 4] and p.min_run_time == pytest.approx(2 * FAST)
    for r in p.rows:
        blocks = [t for part in parts for t in part.row(r.batch_size).times_ms]
        assert r.times_ms == tuple(blocks) and min(blocks) <= r.median_ms <= max(blocks)
        assert r.runs == sum(part.row(r.batch_size).runs for part in parts)
    with pytest.raises(LatencyError, match="nothing to pool"):
        pooled([])


# ------------------------------------------------------------------ what you actually get
class LockProbe(nn.Module):
    """Records, on every forward, whether another thread could take the session's lock at that moment."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        import threading

        lock = LockProbe.lock
        if lock is not None:
            got: list[bool] = []

            def probe():
                ok = lock.acquire(timeout=0.5)
                got.append(ok)
                if ok:
                    lock.release()

            t = threading.Thread(target=probe)
            t.start()
            t.join()
            LockProbe.free.append(got[0])
        return self.inner(x)

    lock = None
    free: list[bool] = []


def test_measure_actual_structured_times_every_form_without_holding_the_lock():
    from pruneviz.core import PruningSession
    from pruneviz.core.removal_measure import measure_actual

    s = PruningSession(LockProbe(load_demo_model("cnn")), criterion="l1_filter", scope="structured")
    s.set_global_sparsity(0.5)
    steps = []
    LockProbe.lock, LockProbe.free = s.lock, []
    try:
        r = measure_actual(s, torch.randn(1, 1, 8, 8), batch_sizes=(1, 4), min_run_time=FAST,
                           progress=lambda done, total, what: steps.append((done, total, what)))
    finally:
        LockProbe.lock = None
    assert LockProbe.free and all(LockProbe.free)  # every timed forward ran with the session's lock free
    assert set(r.forms) == {"dense", "masked", "removed", "onnx"} and r.structured and r.generation == s.generation
    d, m, rm, ox = (r.forms[f] for f in ("dense", "masked", "removed", "onnx"))
    assert d.params == m.params and m.nonzero < d.nonzero and d.file_bytes == m.file_bytes  # masks: same size
    assert rm.params < 0.5 * d.params and rm.file_bytes < 0.5 * d.file_bytes and ox.file_bytes
    assert 0 < r.macs_ratio < 0.5 and rm.macs == r.slim.macs_after and d.macs == r.slim.macs_before
    for form in r.forms:
        assert [row.batch_size for row in r.forms[form].latency.rows] == [1, 4]
        assert r.speedup(form, 1) > 0 and r.forms[form].latency.threads == 1
    assert r.speedup("dense", 4) == 1.0 and steps[-1][0] == steps[-1][1] == len(steps) - 1
    assert 0.45 < r.weights_removed < 0.55


def test_measure_actual_without_structure_and_cancelled():
    from pruneviz.core import PruningSession
    from pruneviz.core.removal_measure import MeasureCancelled, measure_actual

    s = PruningSession(load_demo_model("cnn"), scope="global")
    s.set_global_sparsity(0.8)
    r = measure_actual(s, torch.randn(1, 1, 8, 8), batch_sizes=(1,), min_run_time=FAST, rounds=1)
    assert set(r.forms) == {"dense", "masked"} and not r.structured and "structured scope" in r.note
    assert r.macs_ratio is None and r.params_ratio == 1.0 and r.forms["masked"].latency is not None
    with pytest.raises(MeasureCancelled, match="plan changed"):
        measure_actual(s, torch.randn(1, 1, 8, 8), min_run_time=FAST, cancel=lambda: True)
