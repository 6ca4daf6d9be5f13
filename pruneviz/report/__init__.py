"""A ShrinkBench-style report from one call (or ``pruneviz report`` on the command line).

>>> from pruneviz.report import make_report
>>> make_report("cnn", out="reports/cnn", seeds=3)            # a demo, by name
>>> make_report(my_model, (x, y), calib_data=batches, out="reports/mine")

Writes ``results.csv``, ``latency.csv``, ``summary.md`` and ``report.html`` (self-contained: inline SVG charts,
no scripts; a few hundred KB) into ``out`` (see :mod:`pruneviz.core.report`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..core.report import REPORT_SCOPES, Report, ReportError, run_report
from ..core.report_inputs import ReportInput, load_data_file, load_model_file, save_data, save_model
from .html import render_html

__all__ = ["Report", "ReportError", "ReportInput", "load_data_file", "load_model_file", "make_report", "render_html",
           "save_data", "save_model"]


def make_report(model: str | nn.Module | ReportInput = "cnn", data: Any = None, *, out: str | os.PathLike,
                calib_data: Any = None, task: str = "auto", name: str | None = None,
                criteria: Sequence[str] | None = None, scopes: Sequence[str] = REPORT_SCOPES,
                **kwargs: Any) -> Report:
    """Race the criteria on ``model`` (a demo name, or your ``nn.Module`` with ``data`` and optionally
    ``calib_data`` batches) and write the report folder ``out``. Other keyword arguments go to
    :func:`pruneviz.core.report.run_report` (``sparsities``, ``seeds``, ``overwrite``, ``executor``, ``workers``,
    ``evaluator_kwargs``, ``latency``, ``threads``, ``progress``, ``title``)."""
    if isinstance(model, nn.Module):
        if data is None:
            raise ReportError("pass the evaluation data with your model: make_report(model, (inputs, targets), ...).")
        from ..core.batches import as_batches

        calib = as_batches(calib_data, limit=8) if calib_data is not None else None
        label = name or type(model).__name__
        source: str | ReportInput = ReportInput(model, data, calib, task, label, label)
    elif isinstance(model, str | ReportInput):
        if data is not None and isinstance(model, str):
            raise ReportError(f"{model!r} is a demo with its own data; pass your data with your own model object.")
        source = model
    else:
        raise ReportError(f"model must be a demo name or an nn.Module, not {type(model).__name__}.")
    return run_report(source, out=out, criteria=criteria, scopes=scopes, render_html=render_html, **kwargs)
