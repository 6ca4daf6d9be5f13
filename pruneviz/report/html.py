"""``report.html``: one self-contained page (inline CSS and SVG, no scripts, nothing fetched)."""

from __future__ import annotations

import datetime as _dt
import math

from ..core.race_result import RaceResult
from ..core.report import ReportData
from ..core.report_tables import PointStat, fmt_gap, fmt_metric, fmt_x, metric_unit, point_stats
from .svg import DASHES, Series, color_of, esc, heatmap, interval_chart, line_chart

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1f2937; margin: 24px auto;
       max-width: 1400px; padding: 0 16px; line-height: 1.45; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #e5e7eb; }
.sub { color: #6b7280; font-size: 13px; }
.keys { display: flex; gap: 12px; flex-wrap: wrap; margin: 14px 0; }
.key { background: #eff6ff; border: 1px solid #bfdbfe; border-radius: 8px; padding: 8px 14px; min-width: 170px; }
.key b { display: block; font-size: 20px; color: #1e3a8a; }
.grid { display: flex; flex-wrap: wrap; gap: 8px 14px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12px; margin: 6px 0; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
th, td { border: 1px solid #e5e7eb; padding: 2px 7px; text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f9fafb; } td.l, th.l { text-align: left; }
.note { color: #6b7280; font-size: 12px; } details summary { cursor: pointer; color: #1d4ed8; }
"""


def _scale(race: RaceResult) -> float:
    return 100.0 if race.percent else 1.0


def _legend(race: RaceResult) -> str:
    items = [f'<span><svg width="22" height="8"><line x1="0" y1="4" x2="22" y2="4" stroke="{color_of(c, race.criteria)}" '
             f'stroke-width="3"/></svg>{esc(c)}</span>' for c in race.criteria]
    items += [f'<span><svg width="26" height="8"><line x1="0" y1="4" x2="26" y2="4" stroke="#111827" stroke-width="2" '
              f'stroke-dasharray="{DASHES.get(s, "")}"/></svg>{esc(s)}</span>' for s in race.scopes]
    return f'<div class="legend">{"".join(items)}</div>'


def _curve_charts(race: RaceResult) -> str:
    k = _scale(race)
    unit = metric_unit(race)
    base = (k * race.baseline, "unpruned")
    y_range = (0, 103) if race.percent else None
    axes = [("weights", "% of prunable weights removed"), ("flops", "% of FLOPs removed (zeros skipped)"),
            ("flops_slim", "% of FLOPs removed (channels removed)")]
    blocks = []
    for scope in race.scopes:
        charts = []
        for axis, label in axes:
            curves = [c for c in race.curves(axis) if c.scope == scope]
            if not curves:
                continue
            series = [Series(c.criterion, c.x, [k * v for v in c.y], [k * v for v in c.y_sd],
                             color_of(c.criterion, race.criteria), DASHES.get(scope, "")) for c in curves]
            charts.append(line_chart(series, title=f"{scope} scope: {race.metric_label} vs {axis.replace('_', ' ')}",
                                     x_label=label, y_label=unit, y_range=y_range, hline=base))
        blocks.append(f'<div class="grid">{"".join(charts)}</div>')
    return "".join(blocks)


def _blalock(race: RaceResult) -> str:
    if "magnitude" not in race.criteria or not {"global", "layer"} <= set(race.scopes):
        return ""
    k = _scale(race)
    charts = []
    for axis, label in (("weights", "% of prunable weights removed"), ("flops", "% of FLOPs removed (zeros skipped)")):
        series = [Series(f"magnitude · {c.scope}", c.x, [k * v for v in c.y], [k * v for v in c.y_sd],
                         "#2563eb" if c.scope == "global" else "#f59e0b", DASHES[c.scope])
                  for c in race.curves(axis) if c.criterion == "magnitude" and c.scope in ("global", "layer")]
        charts.append(line_chart(series, title=f"global vs layer-wise magnitude ({axis})", x_label=label,
                                 y_label=metric_unit(race), y_range=(0, 103) if race.percent else None,
                                 hline=(k * race.baseline, "unpruned"), legend=True))
    return ("<h2>Global or layer-wise? (Blalock et al. 2020)</h2><p class='note'>ShrinkBench found global magnitude "
            "pruning ahead at equal parameters and layer-wise ahead at equal FLOPs (a global threshold prunes the "
            "wide, cheap layers first and leaves the expensive early convolutions dense). The same comparison on this "
            "model:</p>"
            f'<div class="grid">{"".join(charts)}</div>')


def _gaps(race: RaceResult) -> str:
    gaps = race.gaps()
    if not gaps:
        return ""
    k = _scale(race)
    items = [(f"{g.criterion} · {g.scope}", k * g.mean, k * g.low, k * g.high, color_of(g.criterion, race.criteria))
             for g in gaps]
    unit = "points" if race.percent else race.metric_label
    chart = interval_chart(items, title="Gap to the random baseline", x_label=f"mean gap ({unit}), 95 % interval",
                           width=560)
    rows = "".join(f"<tr><td class='l'>{esc(g.criterion)}</td><td class='l'>{esc(g.scope)}</td>"
                   f"<td>{esc(fmt_gap(race, g))}</td></tr>" for g in gaps)
    return ("<h2>Gap to the random baseline</h2><p class='note'>Criterion minus random at the same sparsity and seed "
            "(the same evaluation samples), averaged over the grid; positive = better. Interval: Student-t 95 % over "
            "the seeds' mean gaps (none with one seed).</p>"
            f'<div class="grid">{chart}<table><tr><th class="l">criterion</th><th class="l">scope</th>'
            f"<th>gap [95 % interval]</th></tr>{rows}</table></div>")


def _heatmaps(data: ReportData) -> str:
    race = data.race
    out = []
    if data.agreements:
        a0 = data.agreements[0]
        cols = ["overall", *(n.removesuffix(".weight") for n in race.layers)]
        vals = [[a.overall, *a.per_layer.values()] for a in data.agreements]
        out.append(heatmap([a.b for a in data.agreements], cols, vals,
                           title=f"Jaccard overlap with magnitude's pruned weights ({a0.scope}, sparsity {a0.sparsity:g})"))
    scope = "global" if "global" in race.scopes else race.scopes[0]
    sp = min(race.sparsities, key=lambda v: (abs(v - 0.8), v))
    rows, vals = [], []
    for c in race.criteria:
        pts = [r for r in race.points(c, scope) if r.sparsity == sp]
        if pts:
            rows.append(c)
            vals.append([pts[0].layer_sparsity.get(n, math.nan) for n in race.layers])
    if rows:
        out.append(heatmap(rows, [n.removesuffix(".weight") for n in race.layers], vals,
                           title=f"Per-layer sparsity ({scope} scope, {sp:g} overall)"))
    if not out:
        return ""
    return ("<h2>Which weights go</h2><p class='note'>Left: how much each criterion agrees with magnitude on what to "
            "prune (|A ∩ B| / |A ∪ B|). Right: the per-layer allocation a global threshold implies (1.00 = the layer "
            f'collapsed).</p><div class="grid">{"".join(out)}</div>')


def _key_numbers(race: RaceResult, stats: list[PointStat]) -> str:
    tol = 0.01
    keys = [f'<div class="key">unpruned {esc(race.metric_label)}<b>{fmt_metric(race, race.baseline)}'
            f'{" %" if race.percent else ""}</b></div>']
    for scope in race.scopes:
        ok = [st for st in stats if st.scope == scope and (
            race.baseline - st.mean <= tol if race.higher_is_better else st.mean - race.baseline <= tol)]
        if ok:
            best = max(ok, key=lambda st: (st.compression, st.mean))
            extra = f", slim {fmt_x(best.speedup_slim)} fewer FLOPs" if best.speedup_slim else ""
            keys.append(f'<div class="key">{esc(scope)}: best within {"1 point" if race.percent else tol}'
                        f"<b>{fmt_x(best.compression)}</b>{esc(best.criterion)} at {best.sparsity:g}: "
                        f"{fmt_metric(race, best.mean)}{extra}</div>")
    return f'<div class="keys">{"".join(keys)}</div>'


def _speed_table(data: ReportData, stats: list[PointStat]) -> str:
    rows = [st for st in stats if st.measured is not None]
    if not rows:
        return ""
    seen, body = set(), []
    for st in rows:
        key = (st.sparsity, round(st.speedup_slim or 0, 6), round(st.measured or 0, 6))
        if key in seen:
            continue
        seen.add(key)
        body.append(f"<tr><td class='l'>{esc(st.criterion)}</td><td>{st.sparsity:g}</td>"
                    f"<td>{fmt_x(st.compression)}</td><td>{fmt_x(st.speedup_slim)}</td><td>{fmt_x(st.measured)}</td></tr>")
    return ("<h2>Measured CPU speed-up (structured scope)</h2><p class='note'>Only a physically smaller model runs faster "
            f"on a CPU; zeroed weights do not. {esc(data.info.get('latency_note', ''))}; timings vary from run to run "
            "(latency.csv).</p><table><tr><th class='l'>criterion</th><th>channel ratio</th><th>compression</th>"
            f"<th>FLOPs speed-up</th><th>CPU speed-up</th></tr>{''.join(body)}</table>")


def _all_points(race: RaceResult, stats: list[PointStat]) -> str:
    body = "".join(
        f"<tr><td class='l'>{esc(st.criterion)}</td><td class='l'>{esc(st.scope)}</td><td>{st.sparsity:g}</td>"
        f"<td>{fmt_metric(race, st.mean, st.sd)}</td><td>{100 * st.weights_removed:.1f}</td><td>{fmt_x(st.compression)}</td>"
        f"<td>{fmt_x(st.speedup)}</td><td>{fmt_x(st.speedup_slim)}</td><td>{fmt_x(st.measured)}</td></tr>" for st in stats)
    return ("<h2>Every point</h2><details><summary>Show the table (mean ± sd over seeds; results.csv has every seed)"
            f"</summary><table><tr><th class='l'>criterion</th><th class='l'>scope</th><th>sparsity</th>"
            f"<th>{esc(metric_unit(race))}</th><th>% removed</th><th>compression</th><th>speed-up</th>"
            f"<th>slim speed-up</th><th>CPU</th></tr>{body}</table></details>")


def render_html(data: ReportData) -> str:
    """The whole page as a string."""
    race, info = data.race, data.info
    stats = point_stats(race, data.speeds)
    sub = (f"{esc(race.model_name)} · {info.get('params', 0):,} parameters · {len(race.layers)} prunable tensors · "
           f"task {esc(race.task)} · {race.subset_size} evaluation samples"
           + (" (resampled per seed)" if race.resampled else "")
           + f" · seeds {', '.join(map(str, race.seeds))} · race {race.elapsed:.1f} s ({esc(info.get('executor', ''))})")
    notes = "".join(f"<li>{esc(n)}</li>" for n in info.get("notes", []))
    cancelled = "<p style='color:#b91c1c'><b>Cancelled: partial results.</b></p>" if race.cancelled else ""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(info.get('title', race.model_name))} · pruneviz report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{esc(info.get('title', race.model_name))}</h1>
<div class="sub">{sub}</div>
{cancelled}
{_key_numbers(race, stats)}
<p class="note">Definitions (ShrinkBench): <b>compression</b> = parameters / nonzero parameters; <b>speed-up</b> = FLOPs /
FLOPs with zeros skipped; <b>slim speed-up</b> = FLOPs / FLOPs with the pruned channels removed (structured scope);
{esc(race.metric_label)} is the mean over seeds, the band ± one sd. Criteria: {esc(', '.join(race.criteria))}; no
fine-tuning after pruning.</p>
<h2>Trade-off curves</h2>
{_legend(race)}
{_curve_charts(race)}
{_blalock(race)}
{_gaps(race)}
{_heatmaps(data)}
{_speed_table(data, stats)}
{_all_points(race, stats)}
{f"<h2>Notes</h2><ul class='note'>{notes}</ul>" if notes else ""}
<p class="note">Files: results.csv (every model × criterion × scope × sparsity × seed), latency.csv, summary.md.
Generated by pruneviz on {when}.</p>
</body></html>
"""
