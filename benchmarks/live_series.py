"""bench_live's series for the tasks beyond digits classification: each a demo model with its own data,
global slider moves in a global-scope session, timed like the digits series (session call -> final result).

* ``text_rnn``, ``audio_cnn``, ``tabular_mlp``: the demo GRU on 1,000 of the movie-review snippets (the app's
  subset), the audio CNN on the 720 spoken test digits, the MLP on the 115 breast-cancer test rows; default
  chunks (128, then 256).
* ``detector``: the demo detector on the 300 generated test images (``first_chunk=48``, ``chunk_size=128``).
  After every timed move, the final result's mAP is recomputed by ``torchmetrics.detection.
  MeanAveragePrecision`` (faster_coco_eval backend) on the same predictions, outside the timing:
  ``map_matches_reference`` is true when every move agreed to 1e-6 (mAP@0.5, mAP@[.5:.95]).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from live_timing import live_moves, summary

from pruneviz.core import PruningSession
from pruneviz.core.live import LiveEvaluator

#: (section, key, "<=" or ">=", limit) for these series
TASK_TARGETS: list[tuple[str, str, str, float]] = [
    ("detector", "first_estimate_ms_median", "<=", 300.0),
    ("detector", "final_ms_median", "<=", 1500.0),
    ("text_rnn", "final_ms_median", "<=", 300.0),
    ("audio_cnn", "final_ms_median", "<=", 300.0),
    ("tabular_mlp", "final_ms_median", "<=", 100.0),
]

SPARSITY_RANGE = (0.05, 0.9)


def _reference_map(result, targets) -> tuple[float, float]:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(backend="faster_coco_eval")
    metric.update([{k: torch.as_tensor(v) for k, v in p.items()} for p in result.predictions], targets)
    ref = metric.compute()
    return float(ref["map_50"]), float(ref["map"])


def _series(name: str, session: PruningSession, live: LiveEvaluator, n_moves: int, rng: random.Random) -> dict:
    moves = [rng.uniform(*SPARSITY_RANGE) for _ in range(n_moves + 1)]
    try:
        r = live_moves(session, live, moves, session.set_global_sparsity)
    finally:
        live.close()
    fin, first, upd = summary(r["final"]), summary(r["first"]), summary(r["update"])
    return {
        "model": name, "samples": live.evaluator.total, "moves": len(r["final"]),
        "chunks": [list(b) for b in live.evaluator.bounds],
        "first_estimate_ms_median": first["median"], "first_estimate_ms_p95": first["p95"],
        "final_ms_median": fin["median"], "final_ms_p95": fin["p95"], "final_ms_max": fin["max"],
        "mask_update_ms_median": upd["median"], "baseline": live.baseline.value,
        "metric": live.evaluator.task.metric, "_results": r["results"],
    }


def bench_detector(n_moves: int, rng: random.Random) -> dict:
    from pruneviz.data.detector import load_shapes_detector
    from pruneviz.data.shapes import load_shapes_split

    test = load_shapes_split("test")
    session = PruningSession(load_shapes_detector(), criterion="magnitude", scope="global")
    live = LiveEvaluator(session, (test.images, test.targets), first_chunk=48, chunk_size=128)
    out = _series("ShapesDetector", session, live, n_moves, rng)
    diffs = []
    for result in out.pop("_results"):
        m50, m = _reference_map(result, live.evaluator.y)
        diffs.append(max(abs(m50 - result.metrics["map50"]), abs(m - result.metrics["map"])))
    out["map_max_abs_diff_vs_torchmetrics"] = max(diffs)
    out["map_matches_reference"] = bool(max(diffs) <= 1e-6)
    return out


def _demo_series(demo: str, model_name: str) -> Callable[[int, random.Random], dict]:
    """A demo model on its own data, with the app's options (e.g. the text demos' 1,000-snippet subset)."""
    def run(n_moves: int, rng: random.Random) -> dict:
        from pruneviz.data.demos import DEMOS

        d = DEMOS[demo]
        data, calib = d.data()
        opts = d.options()
        session = PruningSession(d.load(), criterion="magnitude", scope="global", calib_data=calib,
                                 embeddings=opts.get("embeddings", False))
        live = LiveEvaluator(session, data, subset_size=opts.get("subset_size"))
        out = _series(model_name, session, live, n_moves, rng)
        out.pop("_results")
        return out
    return run


#: name -> function(n_moves, rng) -> the series' figures
SERIES: dict[str, Callable[[int, random.Random], dict]] = {
    "detector": bench_detector,
    "text_rnn": _demo_series("text_gru", "TextGRU"),
    "audio_cnn": _demo_series("audio_cnn", "AudioCNN"),
    "tabular_mlp": _demo_series("tabular_mlp", "TabularMLP"),
}
