"""Errors pruneviz raises: each names the problem and the way out."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PrunevizError(ValueError):
    """Base class for every error pruneviz raises on bad input."""


class InvalidSparsityError(PrunevizError):
    """A sparsity value outside [0, 1] or not a finite number."""


class UnknownLayerError(PrunevizError, KeyError):
    """A layer name that is not one of the session's prunable tensors."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class NoPrunableTensorsError(PrunevizError):
    """The model (after include/exclude filters) has nothing pruneviz can prune."""


class RecipeMismatchError(PrunevizError):
    """A recipe or checkpoint made for another architecture."""


class CriterionError(PrunevizError):
    """A criterion that cannot run: unknown name, missing data, gradients or BatchNorm."""


class NonFiniteWeightsError(PrunevizError):
    """NaN or inf in the weights to prune."""


class CheckpointError(PrunevizError):
    """A corrupt, foreign or unreadable checkpoint / recipe file."""


class EvaluationError(PrunevizError):
    """Evaluation data or a metric that does not fit the model."""


def suggest(name: str, options: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest options, or ''."""
    close = difflib.get_close_matches(name, list(options), n=n, cutoff=0.4)
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
