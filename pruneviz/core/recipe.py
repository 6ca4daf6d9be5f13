"""The plan as a JSON recipe that re-applies the same masks to a fresh copy of the same architecture."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CheckpointError, RecipeMismatchError
from .files import load_json, save_json
from .plan import Plan
from .session import PruningSession
from .targets import Target

FORMAT = "pruneviz-recipe"
VERSION = 1


def make_recipe(session: PruningSession) -> dict[str, Any]:
    """The session's plan plus what it applies to (tensor names and shapes) and the resulting sparsities."""
    summary = session.summary()
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": type(session.model).__name__,
        "seed": session.seed,
        "plan": session.plan.to_dict(),
        "tensors": {t.name: list(t.shape) for t in session.targets},
        "result": {
            "layer_sparsity": {n: round(v, 6) for n, v in session.layer_sparsities().items()},
            "sparsity": round(summary.sparsity, 6),
            "compression": round(summary.compression, 4),
        },
    }


def recipe_bytes(session: PruningSession) -> bytes:
    """The JSON file :func:`save_recipe` writes, as bytes (for a browser download)."""
    return json.dumps(make_recipe(session), indent=2).encode()


def save_recipe(session: PruningSession, path: str | os.PathLike) -> Path:
    """Write the session's recipe as JSON (atomically)."""
    return save_json(path, make_recipe(session))


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe file, checking it is one."""
    data = load_json(path)
    check_recipe_format(data, str(path))
    return data


def check_recipe_format(data: Any, where: str = "the recipe") -> None:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT or "plan" not in data or "tensors" not in data:
        raise CheckpointError(f"{where} is not a pruneviz recipe (expected a JSON object with format={FORMAT!r}).")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{where} has recipe version {data['version']}; this pruneviz reads up to {VERSION}.")


def check_recipe_fits(recipe: Mapping[str, Any], targets: list[Target], model_name: str) -> None:
    """Raise :class:`RecipeMismatchError` listing every tensor whose name or shape differs."""
    want = {n: tuple(s) for n, s in recipe["tensors"].items()}
    have = {t.name: t.shape for t in targets}
    problems = [f"{n}: recipe {want[n]} vs model {have[n]}" for n in want if n in have and want[n] != have[n]]
    problems += [f"{n}: in the recipe, not in the model" for n in want if n not in have]
    problems += [f"{n}: in the model, not in the recipe" for n in have if n not in want]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise RecipeMismatchError(
            f"this recipe was made for {recipe.get('model', 'another model')!r} and does not fit {model_name!r}: "
            f"{shown}. Nothing was changed. Apply it to the architecture it was made for."
        )


def apply_recipe_to_session(session: PruningSession, recipe: Mapping[str, Any] | str | os.PathLike) -> None:
    """Apply a recipe's plan to an existing session (validated first: on mismatch nothing changes)."""
    if not isinstance(recipe, Mapping):
        recipe = load_recipe(recipe)
    check_recipe_format(recipe)
    check_recipe_fits(recipe, session.targets, type(session.model).__name__)
    session.apply_plan(Plan.from_dict(recipe["plan"]), reason="recipe")


def apply_recipe(model: nn.Module, recipe: Mapping[str, Any] | str | os.PathLike, **session_kwargs: Any) -> PruningSession:
    """Re-apply a recipe to a fresh ``model`` of the same architecture; returns the session holding it.

    The model is checked first; on a mismatch it is left untouched.
    """
    if not isinstance(recipe, Mapping):
        recipe = load_recipe(recipe)
    check_recipe_format(recipe)
    plan = Plan.from_dict(recipe["plan"])
    session_kwargs.setdefault("seed", int(recipe.get("seed", 0)))
    session = PruningSession(model, criterion=plan.criterion, scope=plan.scope, **session_kwargs)
    check_recipe_fits(recipe, session.targets, type(model).__name__)
    session.apply_plan(plan, reason="recipe")
    return session
