"""The explorer's two FigureWidgets (each ships ~5 MB of plotly.js, so there are only two), built once.

Views update their own traces in place inside ``fig.batch_update()``; trace indices are fixed here.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.basedatatypes import Undefined
from plotly.subplots import make_subplots

from .base import COLORS, TRAIL_COLORS

MAIN_WIDTH, MAIN_HEIGHT = 880, 660
FILTERS_WIDTH, FILTERS_HEIGHT = 880, 340
N_TRAIL_SLOTS = len(TRAIL_COLORS)


class MainTraces:
    """Trace indices of the main figure (2x2 subplots)."""

    HIST_KEPT = 0
    HIST_PRUNED = 1
    ALLOC = 2
    TRAIL0 = 3  # N_TRAIL_SLOTS series, one per (criterion, scope)
    TRAIL_NOW = TRAIL0 + N_TRAIL_SLOTS
    CLASS_NOW = TRAIL_NOW + 1
    CLASS_BASE = CLASS_NOW + 1


class MainShapes:
    """Layout shapes of the main figure, created once and edited in place (never the whole list)."""

    HIST_NEG = 0  # -threshold (magnitude)
    HIST_POS = 1  # +threshold
    OVERALL = 2  # overall sparsity on the per-layer bars
    TRAIL_BASE = 3  # unpruned accuracy on the trail


class FilterTraces:
    """Trace indices of the filter figure (1x2 subplots)."""

    IMP_KEPT = 0
    IMP_PRUNED = 1
    HEAT = 2
    OVERLAY = 3


#: Subplot title annotations, in order, of the main figure.
MAIN_TITLES = ("Weights", "Sparsity per layer", "Accuracy vs. weights removed", "Accuracy per class")

class FigureWidget(go.FigureWidget):
    """``go.FigureWidget`` whose update messages never contain "undefined" entries.

    ``batch_update`` sends one message for all the traces it touched, with ``undefined`` for a property
    a trace did not change. plotly 7's front-end model applies such a message wrongly while no view of the
    figure exists yet (a figure built in a callback and displayed afterwards, e.g. by a model picker): the
    untouched traces lose that property (measured here: a bar trace lost its marker colour). So a batch is
    sent as one message per group of traces that changed the same properties (usually 1-3 messages).
    """

    def _send_update_msg(self, restyle_data, relayout_data, trace_indexes=None, source_view_id=None):
        traces = self._normalize_trace_indexes(trace_indexes)
        groups: dict[tuple[str, ...], list[int]] = {}
        for pos in range(len(traces)):
            props = tuple(
                p for p, v in restyle_data.items()
                if not (isinstance(v, list | tuple) and len(v) == len(traces) and v[pos] is Undefined)
            )
            groups.setdefault(props, []).append(pos)
        if len(groups) <= 1:
            return super()._send_update_msg(restyle_data, relayout_data, trace_indexes, source_view_id)
        layout = relayout_data
        for props, positions in groups.items():
            if not props:
                continue
            style = {}
            for p in props:
                v = restyle_data[p]
                per_trace = isinstance(v, list | tuple) and len(v) == len(traces)
                style[p] = [v[i] for i in positions] if per_trace else v
            super()._send_update_msg(style, layout, [traces[i] for i in positions], source_view_id)
            layout = {}
        return None


_FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12, "color": "#1f2937"}


def _base_layout(width: int, height: int) -> dict[str, Any]:
    return {
        "template": "plotly_white",
        "width": width,
        "height": height,
        "autosize": False,
        "margin": {"l": 60, "r": 20, "t": 46, "b": 50},
        "font": _FONT,
        "barmode": "stack",
        "bargap": 0.15,
        "hovermode": "closest",
    }


def make_main_figure() -> go.FigureWidget:
    """Histogram (top left), per-layer sparsity (top right), accuracy trail (bottom left), per class
    (bottom right)."""
    fig = make_subplots(
        rows=2, cols=2, subplot_titles=MAIN_TITLES, horizontal_spacing=0.2, vertical_spacing=0.17,
    )
    bar_line = {"width": 0}
    fig.add_trace(go.Bar(name="kept", x=[], y=[], marker={"color": COLORS["kept"], "line": bar_line},
                         showlegend=False, hovertemplate="%{x:.3g}: %{y} kept<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(name="pruned", x=[], y=[], marker={"color": COLORS["pruned"], "line": bar_line},
                         showlegend=False, hovertemplate="%{x:.3g}: %{y} pruned<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(
        name="sparsity", x=[], y=[], orientation="h", showlegend=False,
        marker={"color": [], "cmin": 0, "cmax": 1, "line": bar_line,
                "colorscale": [[0, "#93c5fd"], [0.6, COLORS["kept"]], [0.9849, "#1e3a8a"],
                               [0.985, COLORS["warn"]], [1, COLORS["warn"]]]},  # red: collapse
        hovertemplate="%{y}: %{x:.1f} % removed<extra></extra>",
    ), 1, 2)
    for i, color in enumerate(TRAIL_COLORS):
        fig.add_trace(go.Scatter(
            name=f"series {i}", x=[], y=[], mode="lines+markers", visible=False,
            line={"color": color, "width": 2}, marker={"color": color, "size": 6},
            hovertemplate="%{x:.1f} % removed: %{y:.1f} %<extra>%{fullData.name}</extra>",
        ), 2, 1)
    fig.add_trace(go.Scatter(
        name="now", x=[], y=[], mode="markers", showlegend=False,
        marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": COLORS["baseline"], "width": 2}},
        hovertemplate="now: %{x:.1f} % removed, %{y:.1f} %<extra></extra>",
    ), 2, 1)
    fig.add_trace(go.Bar(name="now", x=[], y=[], marker={"color": COLORS["kept"]}, showlegend=False,
                         hovertemplate="class %{x}: %{y:.1f} %<extra>now</extra>"), 2, 2)
    fig.add_trace(go.Scatter(
        name="unpruned", x=[], y=[], mode="markers", showlegend=False,
        marker={"symbol": "line-ew-open", "size": 18, "color": COLORS["baseline"],
                "line": {"color": COLORS["baseline"], "width": 3}},
        hovertemplate="class %{x}: %{y:.1f} %<extra>unpruned</extra>",
    ), 2, 2)
    dash = {"color": COLORS["warn"], "width": 1.5, "dash": "dash"}
    dot = {"color": COLORS["baseline"], "width": 1, "dash": "dot"}
    shapes = [
        {"type": "line", "xref": "x", "yref": "y domain", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "line": dash},
        {"type": "line", "xref": "x", "yref": "y domain", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "line": dash},
        {"type": "line", "xref": "x2", "yref": "y2 domain", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "line": dot},
        {"type": "line", "xref": "x3 domain", "yref": "y3", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
         "line": {**dot, "color": COLORS["muted"]}},
    ]
    fig.update_layout(
        **_base_layout(MAIN_WIDTH, MAIN_HEIGHT),
        shapes=[{**s, "visible": False} for s in shapes],
        legend={"x": 0.01, "y": 0.005, "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.8)", "font": {"size": 10}},
    )
    fig.update_xaxes(title_text="weight value (original)", row=1, col=1)
    fig.update_yaxes(title_text="number of weights", row=1, col=1)
    fig.update_xaxes(title_text="weights removed (%)", range=[0, 101], row=1, col=2)
    fig.update_yaxes(autorange="reversed", automargin=True, tickfont={"size": 10}, row=1, col=2)
    fig.update_xaxes(title_text="weights removed (%)", range=[-2, 101], row=2, col=1)
    fig.update_yaxes(title_text="accuracy (%)", range=[0, 103], row=2, col=1)
    fig.update_xaxes(title_text="class", type="category", row=2, col=2)
    fig.update_yaxes(title_text="accuracy (%)", range=[0, 105], row=2, col=2)
    for ann in fig.layout.annotations:
        ann.font = {"size": 13, "color": "#111827"}
    return FigureWidget(fig)


def make_filter_figure() -> go.FigureWidget:
    """Sorted filter importance (left) and the kernels / a downsampled mask (right)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                        subplot_titles=("Filter importance", "Kernels"))
    fig.add_trace(go.Bar(name="kept", x=[], y=[], marker={"color": COLORS["kept"], "line": {"width": 0}},
                         customdata=[], showlegend=False,
                         hovertemplate="filter #%{customdata}: %{y:.3g}<extra>kept</extra>"), 1, 1)
    fig.add_trace(go.Bar(name="pruned", x=[], y=[], marker={"color": COLORS["pruned"], "line": {"width": 0}},
                         customdata=[], showlegend=False,
                         hovertemplate="filter #%{customdata}: %{y:.3g}<extra>pruned</extra>"), 1, 1)
    fig.add_trace(go.Heatmap(z=[[0]], showscale=False, hoverongaps=False, colorscale="RdBu", zmid=0,
                             xgap=0, ygap=0), 1, 2)
    fig.add_trace(go.Heatmap(
        z=[[0]], showscale=False, hoverinfo="skip", zmin=0, zmax=4, visible=False,
        colorscale=[[0, "rgba(255,255,255,0)"], [1, "rgba(229,231,235,0.93)"]],
    ), 1, 2)
    fig.update_layout(**{**_base_layout(FILTERS_WIDTH, FILTERS_HEIGHT), "bargap": 0.05})
    fig.update_xaxes(title_text="filters, most important first", row=1, col=1)
    fig.update_yaxes(title_text="importance", row=1, col=1)
    fig.update_xaxes(showgrid=False, zeroline=False, showticklabels=False, row=1, col=2)
    fig.update_yaxes(showgrid=False, zeroline=False, showticklabels=False, autorange="reversed",
                     scaleanchor="x2", row=1, col=2)
    for ann in fig.layout.annotations:
        ann.font = {"size": 13, "color": "#111827"}
    return FigureWidget(fig)


def snapshot(fig: go.FigureWidget) -> None:
    """Make the figure's synced full state (``_widget_data``/``_widget_layout``) match its current data
    *without sending it*.

    Updates travel as transient ``_py2js_*`` messages; a front end that connects later (Voila renders the
    page after the kernel ran the notebook; a reloaded JupyterLab page) asks for the full state instead,
    and would otherwise get the figure as it was built, empty.
    """
    edits = (fig._last_trace_edit_id, fig._last_layout_edit_id)
    if getattr(fig, "_pv_snapshot_edits", None) == edits:
        return  # nothing was sent since the last snapshot
    fig._trait_values["_widget_data"] = _tree_copy(fig._data)
    fig._trait_values["_widget_layout"] = _tree_copy(fig._layout_obj._props)
    fig._pv_snapshot_edits = edits


def _tree_copy(value: Any) -> Any:
    """Copy the dicts and lists of a figure's JSON-like data (plotly edits those in place); leaf values and
    numpy arrays (which plotly replaces, never mutates) are shared. ~10x faster than ``deepcopy``."""
    if isinstance(value, dict):
        return {k: _tree_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and isinstance(value[0], dict | list | tuple):
            return [_tree_copy(v) for v in value]
        return list(value)
    return value
