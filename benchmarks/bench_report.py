"""Benchmark: ``pruneviz report`` on the demo CNN, in-process, on a 2-worker process pool and on a 2-worker
Dask ``LocalCluster`` (processes, one thread each).

The race is the report's default: 9 criteria (magnitude, random, saliency, taylor, l1/l2 filter, bn_scale, LAMP,
Wanda) x 3 scopes (global, layer, structured) x 10 sparsities x 3 seeds = 810 points, plus the measured CPU
latency of every distinct slim model (structured scope) and the four files. ``report_s.*`` is the wall time of
the whole ``make_report`` call (the process pool's start-up included; the Dask cluster is started before the
clock runs, its start-up is reported as ``dask_cluster_start_s``, and the workers' warm-up that ``pruneviz report
--scheduler`` runs after connecting is included); ``race_s.*`` the race alone. ``identical``:
whether the three ``results.csv`` files are byte-for-byte equal. The machine's load average is recorded: the
2 cores are shared, so pool and Dask figures depend on what else runs.

Usage::

    .venv/bin/python benchmarks/bench_report.py [--json PATH] [--seeds N]

Exits 0 unless the script itself errors (the target, <= 60 s in-process, is reported, not enforced).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from report import write_json  # noqa: E402 - benchmarks/ is on sys.path when run as a script

from pruneviz.core.race_tasks import warm_up  # noqa: E402
from pruneviz.report import make_report  # noqa: E402

TARGET_INLINE_S = 60.0


def _run(out: Path, seeds: int, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    rep = make_report("cnn", out=out, seeds=seeds, **kwargs)
    return time.perf_counter() - t0, rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    results: dict = {"report_s": {}, "race_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t, inline = _run(tmp / "inline", args.seeds)
        results["report_s"]["inline"], results["race_s"]["inline"] = round(t, 2), round(inline.race.elapsed, 2)
        print(f"inline: report {t:.1f} s (race {inline.race.elapsed:.1f} s), {len(inline.race.rows)} points")
        t, pool = _run(tmp / "pool2", args.seeds, workers=2, executor_label="2 worker processes")
        results["report_s"]["pool2"], results["race_s"]["pool2"] = round(t, 2), round(pool.race.elapsed, 2)
        print(f"pool2:  report {t:.1f} s (race {pool.race.elapsed:.1f} s)")
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            results["dask_cluster_start_s"] = round(time.perf_counter() - t0, 2)
            t1 = time.perf_counter()
            client.run(warm_up)  # what `pruneviz report --scheduler` does after connecting
            _, dask = _run(tmp / "dask2", args.seeds, executor=client.get_executor(), executor_label="Dask 2 workers")
            t = time.perf_counter() - t1
        results["report_s"]["dask2"], results["race_s"]["dask2"] = round(t, 2), round(dask.race.elapsed, 2)
        print(f"dask2:  report {t:.1f} s (race {dask.race.elapsed:.1f} s); cluster start "
              f"{results['dask_cluster_start_s']:.1f} s")
        csvs = [(tmp / k / "results.csv").read_bytes() for k in ("inline", "pool2", "dask2")]
        results["identical"] = csvs[0] == csvs[1] == csvs[2]
        results["files_bytes"] = {p.name: p.stat().st_size for p in sorted((tmp / "inline").iterdir())}
    r = inline.race
    results["race"] = {"criteria": list(r.criteria), "scopes": list(r.scopes), "sparsities": list(r.sparsities),
                       "seeds": list(r.seeds), "points": len(r.rows), "slim_models_timed": len(inline.speeds)}
    results["target_inline_s"] = TARGET_INLINE_S
    results["inline_within_target"] = results["report_s"]["inline"] <= TARGET_INLINE_S
    results["meta"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "note": "every task runs on one thread; deterministic criteria on the full test split are measured once "
                "and repeated for each seed (random runs every seed)",
    }
    print(f"identical CSV: {results['identical']}; files: {results['files_bytes']}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
