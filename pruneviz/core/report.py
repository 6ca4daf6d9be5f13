"""The report: the criterion race on one model over several seeds, written as a folder.

``run_report`` races every criterion (random and magnitude always included) over the scopes, sparsities and
seeds, measures the CPU speed-up of the physically smaller model in structured scope, and writes
``results.csv`` (one row per model x criterion x scope x sparsity x seed; deterministic: equal races give
equal files), ``latency.csv`` (the measured speed-ups: timings vary run to run, so they are kept apart),
``summary.md`` and ``report.html`` (drawn by the renderer the caller passes: see :mod:`pruneviz.report`).
Everything is written into a temporary folder beside ``out`` and renamed into place at the end, so an error
or an interrupt leaves nothing half-written (and an existing report untouched).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import csv
import io
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batches import as_samples, take_range
from .criteria import find_batchnorms
from .finetune import ProgressFn, torch_threads
from .race import (
    DEFAULT_CRITERIA,
    DEFAULT_SPARSITIES,
    check_grid,
    criterion_race,
    known_criteria,
    needs_data,
    resolve_criterion,
)
from .race_result import Agreement, RaceResult
from .report_inputs import ReportError, ReportInput, demo_input
from .report_tables import Speed, markdown_summary, point_stats, speed_key
from .targets import find_targets

__all__ = ["REPORT_SCOPES", "Report", "ReportData", "ReportError", "check_out", "choose_criteria", "run_report"]

REPORT_SCOPES: tuple[str, ...] = ("global", "layer", "structured")
BASELINES: tuple[str, ...] = ("random", "magnitude")
LATENCY_BATCH = 64
LATENCY_MIN_RUN_S = 0.1
LATENCY_MIN_RUNS = 7


@dataclass
class ReportData:
    """Everything the HTML renderer draws."""

    race: RaceResult
    info: dict[str, Any]
    speeds: dict[tuple, Speed]
    agreements: list[Agreement]
    summary_md: str


@dataclass
class Report:
    """A written report: its folder, its files by name, the race and the measured speed-ups."""

    folder: Path
    files: dict[str, Path]
    race: RaceResult
    speeds: dict[tuple, Speed] = field(default_factory=dict)
    agreements: list[Agreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` as a Path, or a :class:`ReportError` when it is a file, or a folder that is not empty (without
    ``overwrite``)."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ReportError(f"--out {path} is a file; give a folder name.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ReportError(f"the output folder {path} exists and is not empty: choose another --out, or pass "
                          "--overwrite (overwrite=True) to replace it.")
    return path


def choose_criteria(requested: Sequence[str] | None, inp: ReportInput) -> tuple[list[str], list[str]]:
    """The criteria to race (random and magnitude first) and notes on what was added or left out."""
    notes: list[str] = []
    has_bn = bool(find_batchnorms(inp.model, find_targets(inp.model)))
    if requested is None:
        names = []
        for c in DEFAULT_CRITERIA:
            if needs_data(resolve_criterion(c)[1]) and inp.calib is None:
                notes.append(f"{c} left out: it needs calibration data (add calib_inputs/calib_targets to --data).")
            elif c == "bn_scale" and not has_bn:
                notes.append("bn_scale left out: the model has no BatchNorm after its layers.")
            else:
                names.append(c)
    else:
        names = [resolve_criterion(c)[0] for c in requested]  # unknown names fail here, with suggestions
        if not names:
            raise ReportError(f"--criteria is empty; choose among {', '.join(known_criteria())}.")
    for b in reversed(BASELINES):
        if b not in names:
            names.insert(0, b)
            if requested is not None:
                notes.append(f"{b} added: the random and magnitude baselines are always included.")
    return list(dict.fromkeys(names)), notes


def _run_ms(model: nn.Module, x: torch.Tensor, threads: int) -> float:
    """Median milliseconds of one forward pass (inference mode, ``threads`` threads): two warm-up calls, then
    calls until ``LATENCY_MIN_RUN_S`` seconds and at least ``LATENCY_MIN_RUNS`` runs have passed."""
    times: list[float] = []
    with torch_threads(threads), torch.inference_mode():
        for _ in range(2):
            model(x)
        start = time.perf_counter()
        while len(times) < LATENCY_MIN_RUNS or time.perf_counter() - start < LATENCY_MIN_RUN_S:
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def measure_speeds(race: RaceResult, example: torch.Tensor, model: nn.Module, threads: int = 1,
                   progress: ProgressFn | None = None) -> dict[tuple, Speed]:
    """The measured CPU speed-up of every distinct slim model of the race's structured points (median latency,
    batch ``LATENCY_BATCH``, ``threads`` threads; see :func:`_run_ms`)."""
    source = race.mask_fn
    if source is None or not hasattr(source, "slim"):
        return {}
    firsts: dict[tuple, Any] = {}
    for r in race.rows:
        key = speed_key(r)
        if key and key not in firsts:
            firsts[key] = r
    if not firsts:
        return {}
    out: dict[tuple, Speed] = {}
    with torch_threads(threads):
        dense = _run_ms(copy.deepcopy(model).eval(), example, threads)
        for i, (key, r) in enumerate(firsts.items()):
            slim = source.slim(r.criterion, r.scope, r.sparsity, r.seed, take_range(example, 0, 1))
            out[key] = Speed(key, len(example), threads, dense, _run_ms(slim.eval(), example, threads))
            if progress is not None:
                progress(i + 1, len(firsts), {"phase": "latency"})
    return out


def _latency_csv(race: RaceResult, speeds: dict[tuple, Speed]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["criterion", "scope", "sparsity", "channels_removed", "batch", "threads", "dense_ms", "slim_ms",
                "speedup"])
    seen = set()
    for st in point_stats(race, speeds):
        rows = [r for r in race.points(st.criterion, st.scope) if r.sparsity == st.sparsity]
        key = speed_key(rows[0]) if rows else None
        sp = speeds.get(key) if key else None
        if sp is None or (st.criterion, st.scope, st.sparsity) in seen:
            continue
        seen.add((st.criterion, st.scope, st.sparsity))
        w.writerow([st.criterion, st.scope, repr(st.sparsity), ";".join(f"{n}={k}" for n, k in key), sp.batch,
                    sp.threads, f"{sp.dense_ms:.4f}", f"{sp.slim_ms:.4f}", f"{sp.speedup:.4f}"])
    return buf.getvalue()


def _agreements(race: RaceResult) -> list[Agreement]:
    if "magnitude" not in race.criteria or race.mask_fn is None:
        return []
    scope = "global" if "global" in race.scopes else race.scopes[0]
    sp = min(race.sparsities, key=lambda v: (abs(v - 0.5), v))
    return [race.jaccard("magnitude", c, sp, scope) for c in race.criteria if c != "magnitude"]


def run_report(
    source: str | ReportInput,
    *,
    out: str | os.PathLike,
    criteria: Sequence[str] | None = None,
    scopes: Sequence[str] = REPORT_SCOPES,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    seeds: int | Sequence[int] = 3,
    overwrite: bool = False,
    executor: cf.Executor | str | None = None,
    workers: int | None = None,
    evaluator_kwargs: Mapping[str, Any] | None = None,
    latency: bool = True,
    threads: int = 1,
    progress: ProgressFn | None = None,
    title: str | None = None,
    render_html: Callable[[ReportData], str] | None = None,
    executor_label: str = "in-process",
) -> Report:
    """Race, measure and write the report folder ``out`` (see the module docstring). ``source``: a demo name
    (``pruneviz.data.demos.DEMOS``) or a :class:`ReportInput` (your model, data and calibration batches)."""
    t0 = time.perf_counter()
    path = check_out(out, overwrite)
    sp, seed_list, scope_list = check_grid(sparsities, seeds, scopes)
    inp = demo_input(source) if isinstance(source, str) else source
    if not isinstance(inp, ReportInput):
        raise ReportError(f"a report runs on a demo name or a ReportInput, not {type(source).__name__}.")
    names, notes = choose_criteria(criteria, inp)
    def race_progress(done: int, total: int, info: dict[str, Any]) -> None:
        if progress is not None:
            progress(done, total, {**info, "phase": "race"})

    race = criterion_race(inp.model, inp.data, criteria=names, scopes=scope_list, sparsities=sp, seeds=seed_list,
                          executor=executor, workers=workers, calib_data=inp.calib, progress=race_progress,
                          evaluator_kwargs=evaluator_kwargs, task=None if inp.task == "auto" else inp.task,
                          model_name=inp.name)
    samples = as_samples(inp.data)
    example = take_range(samples.inputs, 0, min(LATENCY_BATCH, len(samples)))
    timed = latency and isinstance(example, torch.Tensor)
    speeds = measure_speeds(race, example, inp.model, threads, progress) if timed else {}
    agreements = _agreements(race)
    info = {"title": title or inp.title, "params": sum(p.numel() for p in inp.model.parameters()),
            "executor": executor_label, "notes": notes,
            "latency_note": (f"median of >= {LATENCY_MIN_RUNS} runs, batch {len(example)}, {threads} thread(s)" if speeds
                             else "not measured")}
    summary = markdown_summary(race, info, speeds, agreements)
    if notes:
        summary += "\n## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    html = render_html(ReportData(race, info, speeds, agreements, summary)) if render_html is not None else None
    files = _write_folder(path, overwrite, {
        "results.csv": race.to_csv(model=inp.name), "latency.csv": _latency_csv(race, speeds),
        "summary.md": summary, **({"report.html": html} if html is not None else {})})
    return Report(path, files, race, speeds, agreements, notes, time.perf_counter() - t0)


def _write_folder(path: Path, overwrite: bool, contents: dict[str, str]) -> dict[str, Path]:
    """Write ``contents`` into a temporary folder beside ``path`` and rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    old: Path | None = None
    try:
        for name, text in contents.items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)
        check_out(path, overwrite)  # again: it may have appeared while the race ran
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            old.rename(path)  # put the previous report back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {name: path / name for name in contents}
