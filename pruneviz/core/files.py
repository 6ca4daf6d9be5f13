"""Safe file I/O: atomic writes and checked loads (``weights_only=True``)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from .errors import CheckpointError


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through ``write(fileobj)`` into a temporary file beside ``path``, then rename it.

    A failure leaves any existing file at ``path`` untouched and no partial file behind.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a file name such as {path / 'pruned.pt'}.")
    parent = path.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CheckpointError(f"cannot write {path}: {blocker} is a file, not a folder. Choose another path.")
    if not parent.exists():
        raise CheckpointError(f"the folder {parent} does not exist; create it first or choose another path.")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(f"cannot write into {parent} ({e.strerror or type(e).__name__}): choose a folder you "
                              "can write to.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if e.errno == errno.ENOSPC:
            raise CheckpointError(f"nothing was written to {path}: the disk is full. Free some space or choose "
                                  "another disk.") from None
        raise CheckpointError(f"nothing was written to {path} ({e.strerror or e or type(e).__name__}); any file that was "
                              "there is unchanged. Choose a path you can write to.") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    payload = json.dumps(data, indent=2, sort_keys=False).encode()
    return atomic_write(path, lambda f: f.write(payload))


def load_json(path: str | os.PathLike) -> Any:
    """Read JSON, with a :class:`CheckpointError` naming the file when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"no file at {path}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a JSON file ({e}); pass a recipe written by pruneviz.") from None


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with a clear error for missing, corrupt or foreign files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}.") from None
    except Exception as e:  # noqa: BLE001 - unpickling raises many kinds
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}). "
            "pruneviz only loads plain tensors (weights_only=True): re-save it with torch.save(model.state_dict())."
        ) from None
