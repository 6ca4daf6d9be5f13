"""The report's numbers, ShrinkBench's way, and ``summary.md``.

Definitions (Blalock et al. 2020, ShrinkBench): compression ratio = parameters / nonzero parameters;
theoretical speed-up = FLOPs / FLOPs with zeros skipped (and, in structured scope, FLOPs / FLOPs of the model
with its pruned channels removed); the headline metric as mean ± sd over seeds; the measured CPU speed-up
only where the model was physically made smaller (structured scope).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .race_result import Gap, RacePoint, RaceResult, _sd


@dataclass(frozen=True)
class Speed:
    """Measured CPU latency of the dense and of the slimmed model for one set of removed channels."""

    key: tuple[tuple[str, int], ...]
    batch: int
    threads: int
    dense_ms: float
    slim_ms: float

    @property
    def speedup(self) -> float:
        return self.dense_ms / max(self.slim_ms, 1e-12)


@dataclass(frozen=True)
class PointStat:
    """One (criterion, scope, sparsity) over its seeds."""

    criterion: str
    scope: str
    sparsity: float
    mean: float
    sd: float
    seeds: int
    weights_removed: float
    compression: float
    speedup: float | None
    speedup_slim: float | None
    measured: float | None
    layer_sparsity: dict[str, float]


def speed_key(r: RacePoint) -> tuple[tuple[str, int], ...] | None:
    return None if r.channels_removed is None else tuple(r.channels_removed.items())


def point_stats(race: RaceResult, speeds: dict[tuple, Speed] | None = None) -> list[PointStat]:
    """Every (criterion, scope, sparsity) of the race, aggregated over seeds (race order)."""
    groups: OrderedDict[tuple[str, str, float], list[RacePoint]] = OrderedDict()
    for r in race.rows:
        groups.setdefault((r.criterion, r.scope, r.sparsity), []).append(r)
    out = []
    for (c, s, sp), pts in groups.items():
        vals = [p.value for p in pts]
        first = pts[0]

        def mean(xs: list[float | None]) -> float | None:
            xs2 = [x for x in xs if x is not None]
            return sum(xs2) / len(xs2) if xs2 and len(xs2) == len(xs) else None

        key = speed_key(first)
        sp_meas = speeds.get(key) if speeds and key else None
        out.append(PointStat(c, s, sp, sum(vals) / len(vals), _sd(vals), len(pts),
                             mean([p.weights_removed for p in pts]) or 0.0, mean([p.compression for p in pts]) or 1.0,
                             mean([p.speedup for p in pts]), mean([p.speedup_slim for p in pts]),
                             None if sp_meas is None else sp_meas.speedup, first.layer_sparsity))
    return out


def fmt_metric(race: RaceResult, value: float, sd: float | None = None) -> str:
    """'98.6 ± 0.3' (percent points for fractions) or '0.912 ± 0.004'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if race.percent:
        return f"{100 * value:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}")
    return f"{value:.3f}" + ("" if sd is None else f" ± {sd:.3f}")


def fmt_x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def metric_unit(race: RaceResult) -> str:
    return f"{race.metric_label} (%)" if race.percent else race.metric_label


def fmt_gap(race: RaceResult, g: Gap) -> str:
    scale, unit = (100, " points") if race.percent else (1, "")
    if math.isnan(g.low):
        return f"{scale * g.mean:+.1f}{unit} (1 seed: no interval)" if race.percent else f"{g.mean:+.3f}"
    f = ".1f" if race.percent else ".3f"
    return f"{scale * g.mean:+{f}}{unit} [{scale * g.low:+{f}}, {scale * g.high:+{f}}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def best_per_sparsity(race: RaceResult, stats: list[PointStat]) -> list[tuple[str, float, PointStat]]:
    """Per scope and sparsity, the criterion with the best mean headline metric."""
    best: OrderedDict[tuple[str, float], PointStat] = OrderedDict()
    for st in stats:
        k = (st.scope, st.sparsity)
        cur = best.get(k)
        better = cur is None or (st.mean > cur.mean if race.higher_is_better else st.mean < cur.mean)
        if better:
            best[k] = st
    return [(s, sp, st) for (s, sp), st in best.items()]


def markdown_summary(race: RaceResult, info: dict[str, Any], speeds: dict[tuple, Speed],
                     agreements: list[Any]) -> str:
    """``summary.md``: the setup, the definitions, the headline metric per criterion and scope, the gap to
    random, mask agreement with magnitude and every point (mean over seeds)."""
    stats = point_stats(race, speeds)
    unit = metric_unit(race)
    lines = [f"# Pruning report: {info.get('title', race.model_name)}", ""]
    lines += [
        f"- model: **{race.model_name}** ({info.get('params', '?')} parameters, {len(race.layers)} prunable tensors), "
        f"task: {race.task}, headline metric: {race.metric_label}",
        f"- unpruned {race.metric_label}: **{fmt_metric(race, race.baseline)}** on {race.subset_size} samples"
        + (" (a different stratified subset per seed)" if race.resampled else ""),
        f"- criteria: {', '.join(race.criteria)}; scopes: {', '.join(race.scopes)}",
        f"- sparsities: {', '.join(f'{s:g}' for s in race.sparsities)}; seeds: {', '.join(map(str, race.seeds))}",
        f"- seeds reseed the random criterion{' and resample the evaluation subset' if race.resampled else ''}; "
        "deterministic criteria on the same samples give the same value for every seed (sd 0).",
        f"- race: {race.elapsed:.1f} s ({info.get('executor', 'in-process')})"
        + (" — CANCELLED, partial results" if race.cancelled else ""),
        "",
        "Definitions (ShrinkBench): *compression* = parameters / nonzero parameters; *speed-up* = FLOPs / FLOPs "
        "with zeros skipped; *slim speed-up* = FLOPs / FLOPs with the pruned channels removed (structured scope); "
        f"*CPU* = measured latency of the dense over the physically smaller model ({info.get('latency_note', '')}). "
        f"{race.metric_label} is mean ± sd over seeds" + (", in %." if race.percent else "."),
        "",
    ]
    cols = [f"{s:g}" for s in race.sparsities]
    lines += [f"## {unit} by criterion and sparsity", ""]
    rows = []
    for c in race.criteria:
        for s in race.scopes:
            by = {st.sparsity: st for st in stats if st.criterion == c and st.scope == s}
            rows.append([c, s, *(fmt_metric(race, by[sp].mean, by[sp].sd) if sp in by else "–"
                                  for sp in race.sparsities)])
    lines += [_table(["criterion", "scope", *cols], rows), ""]
    gaps = race.gaps()
    if gaps:
        lines += ["## Gap to the random baseline", "",
                  "Mean over every (sparsity, seed) of criterion minus random (paired by seed; positive = better), "
                  "with the 95 % Student-t interval over seeds.", ""]
        lines += [_table(["criterion", "scope", "gap"], [[g.criterion, g.scope, fmt_gap(race, g)] for g in gaps]), ""]
    if agreements:
        a0 = agreements[0]
        lines += [f"## Mask agreement with magnitude ({a0.scope} scope, sparsity {a0.sparsity:g}, seed {a0.seed})", "",
                  "Jaccard overlap |A ∩ B| / |A ∪ B| of the pruned weights.", ""]
        lines += [_table(["criterion", "overall", *(n.removesuffix(".weight") for n in race.layers)],
                         [[a.b, f"{a.overall:.3f}", *("–" if math.isnan(v) else f"{v:.3f}" for v in a.per_layer.values())]
                          for a in agreements]), ""]
    lines += ["## Best criterion at each sparsity", ""]
    lines += [_table(["scope", "sparsity", "best", unit, "compression"],
                     [[s, f"{sp:g}", st.criterion, fmt_metric(race, st.mean, st.sd), fmt_x(st.compression)]
                      for s, sp, st in best_per_sparsity(race, stats)]), ""]
    lines += ["## Every point (mean over seeds)", ""]
    lines += [_table(["criterion", "scope", "sparsity", unit, "Δ", "weights removed", "compression", "speed-up",
                      "slim speed-up", "CPU"],
                     [[st.criterion, st.scope, f"{st.sparsity:g}", fmt_metric(race, st.mean, st.sd),
                       fmt_metric(race, st.mean - race.baseline), f"{100 * st.weights_removed:.1f} %",
                       fmt_x(st.compression), fmt_x(st.speedup), fmt_x(st.speedup_slim), fmt_x(st.measured)]
                      for st in stats]), ""]
    return "\n".join(lines)
