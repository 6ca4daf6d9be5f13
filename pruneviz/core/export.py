"""Export the pruned model: ``torch.nn.utils.prune`` form (weight_orig + weight_mask) or made permanent."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from .errors import PrunevizError
from .files import atomic_write
from .masks import unit_rows
from .session import PruningSession
from .targets import get_tensor

FORMS = ("torch_prune", "permanent")


def pruned_copy(session: PruningSession, form: str = "torch_prune") -> nn.Module:
    """A deep copy of the session's model with the current masks.

    ``torch_prune``: masks attached with ``torch.nn.utils.prune.custom_from_mask`` (so a training script can
    fine-tune with the masks held fixed; ``prune.remove`` makes them permanent). ``permanent``: plain
    weights with the pruned ones set to zero.
    """
    if form not in FORMS:
        raise PrunevizError(f"unknown export form {form!r}; choose one of {', '.join(FORMS)}.")
    with session.lock:
        model = copy.deepcopy(session.model)
        masks = session.masks
        if form == "permanent":
            return model
        with torch.no_grad():
            for t in session.targets:
                for name in [t.name, *session.channel_tensors(t.name)]:
                    get_tensor(model, name).copy_(session.original_tensor(name))
        for t in session.targets:
            module = model.get_submodule(t.module_name) if t.module_name else model
            prune.custom_from_mask(module, t.param_name, masks[t.name])
            keep_channels = session.channel_mask(t.name)
            if keep_channels is not None:  # structured: the channel's bias and BatchNorm scale/shift go too
                rows = unit_rows(keep_channels, t)
                for name in session.channel_tensors(t.name):
                    owner, _, attr = name.rpartition(".")
                    prune.custom_from_mask(model.get_submodule(owner), attr, rows)
    return model


def export_pruned_model(session: PruningSession, path: str | os.PathLike, form: str = "torch_prune") -> Path:
    """Save the pruned model's state dict to ``path`` atomically (see :func:`pruned_copy` for ``form``)."""
    state = pruned_copy(session, form).state_dict()
    return atomic_write(path, lambda f: torch.save(state, f))


def pruned_model_bytes(session: PruningSession, form: str = "torch_prune") -> bytes:
    """The file :func:`export_pruned_model` writes, as bytes (for a browser download)."""
    buf = io.BytesIO()
    torch.save(pruned_copy(session, form).state_dict(), buf)
    return buf.getvalue()
