"""Concept lessons on the embedded data (digits; lesson 7: text, audio, tables too): one module per notebook, the logic the notebooks call.

=====================  ==============================================================
module                 notebook
=====================  ==============================================================
``what_is_pruning``    01 — one layer, a slider, the mask and the hole in the histogram
``criteria``           02 — magnitude vs random vs saliency (Han et al. 2015)
``scope``              03 — global vs layer-wise sparsity, layer collapse (Tanaka et al. 2020)
``structured``         04 — whole filters, % zeros vs FLOPs (Li et al. 2017)
``sensitivity``        05 — per-layer sensitivity analysis (Li et al. 2017)
``finetune``           06 — prune, then fine-tune; iterative vs one shot (network slimming)
``modalities``         07 — images, text, audio, tables: who tolerates most; which text layer breaks
=====================  ==============================================================

Each module has pure computations (numbers, testable without a kernel), a widget class built on one
FigureWidget, ``show()`` (display it, run its computation) and ``finding()`` (a paper's result next to
the same measurement made on the digits when the notebook runs). Modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

LESSONS = ("what_is_pruning", "criteria", "scope", "structured", "sensitivity", "finetune", "modalities")

__all__ = [*LESSONS, "common"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
