"""Evaluation and calibration data in every form users bring, as one fixed set of samples.

Forms: ``(inputs, targets)`` tensors or arrays; a ``Dataset``; a ``DataLoader`` (any collate function,
sampler or ``drop_last``); a list or other iterable of ``(inputs, targets)`` batches. The input part may be
a tensor, a dict of tensors (``model(batch)`` with ``batch["input_ids"]``), a tuple of tensors or a list of
per-sample tensors (detection images); the target part a tensor or a list of per-sample dicts (detection:
``{"boxes", "labels"}``). A dict batch that holds its labels under ``"labels"`` (Hugging Face style) is split
into (the other keys, the labels).

Batched structures follow three rules: a tensor's first dimension indexes samples; a dict or tuple holds
structures of the same length; a list holds one item per sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .errors import EvaluationError

Batch = tuple[Any, Any]
#: keys under which a dict batch may hold its targets
LABEL_KEYS: tuple[str, ...] = ("labels", "label", "targets", "target")


# --------------------------------------------------------------------------- describing
def describe(obj: Any, depth: int = 0) -> str:
    """A short human description of a (batched) structure: 'Tensor (32, 1, 8, 8) float32', 'dict(...)'."""
    if isinstance(obj, torch.Tensor):
        return f"Tensor {tuple(obj.shape)} {obj.dtype}"
    if isinstance(obj, np.ndarray):
        return f"ndarray {obj.shape} {obj.dtype}"
    if depth >= 2:
        return type(obj).__name__
    if isinstance(obj, Mapping):
        items = list(obj.items())[:4]
        inner = ", ".join(f"{k}: {describe(v, depth + 1)}" for k, v in items)
        return f"dict({inner}{', ...' if len(obj) > 4 else ''})"
    if isinstance(obj, tuple):
        return f"tuple({', '.join(describe(v, depth + 1) for v in obj[:3])}{', ...' if len(obj) > 3 else ''})"
    if isinstance(obj, list):
        return f"list of {len(obj)}" + (f" [{describe(obj[0], depth + 1)}, ...]" if obj else "")
    return type(obj).__name__


# --------------------------------------------------------------------------- batched structures
def _as_tensor(obj: Any) -> Any:
    return torch.as_tensor(obj) if isinstance(obj, np.ndarray) else obj


def to_structure(obj: Any) -> Any:
    """numpy arrays and pandas frames or series (at any depth of dicts/tuples/lists) as tensors."""
    if isinstance(obj, np.ndarray):
        return torch.as_tensor(obj)
    if _is_frame(obj):
        return torch.as_tensor(np.asarray(obj.to_numpy()))
    if isinstance(obj, Mapping):
        return {k: to_structure(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and type(obj) is tuple:  # not named tuples such as PackedSequence
        return tuple(to_structure(v) for v in obj)
    if isinstance(obj, list):
        return [to_structure(v) for v in obj]
    return obj


def length(obj: Any, where: str = "the batch") -> int:
    """Number of samples in a batched structure (see the module docstring)."""
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(obj, PackedSequence):
        raise EvaluationError(
            f"{where} is a PackedSequence, which pruneviz cannot split into samples: pass padded tensors (ids of "
            "shape (N, L), padded at the end) and let the model mask the padding (or pack inside forward).")
    if isinstance(obj, torch.Tensor):
        if obj.dim() == 0:
            raise EvaluationError(f"{where} is a 0-d tensor: it needs a batch dimension (one row per sample).")
        return int(obj.shape[0])
    if isinstance(obj, list):
        return len(obj)
    if isinstance(obj, Mapping | tuple):
        parts = list(obj.values()) if isinstance(obj, Mapping) else list(obj)
        if not parts:
            raise EvaluationError(f"{where} is an empty {type(obj).__name__}: it holds no samples.")
        sizes = {length(p, where) for p in parts}
        if len(sizes) != 1:
            raise EvaluationError(
                f"{where} is {describe(obj)}, whose parts hold different numbers of samples "
                f"({sorted(sizes)}): every tensor of a batch must have the same first dimension."
            )
        return sizes.pop()
    raise EvaluationError(
        f"{where} is a {type(obj).__name__}, which pruneviz cannot split into samples: use tensors, dicts or "
        "tuples of tensors, or lists with one item per sample."
    )


def take(obj: Any, idx: Sequence[int] | torch.Tensor) -> Any:
    """The samples ``idx`` of a batched structure, in that order."""
    if isinstance(obj, torch.Tensor):
        return obj[torch.as_tensor(idx, dtype=torch.long)]
    if isinstance(obj, list):
        return [obj[int(i)] for i in idx]
    if isinstance(obj, Mapping):
        return {k: take(v, idx) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(take(v, idx) for v in obj)
    raise EvaluationError(f"cannot select samples from a {type(obj).__name__}.")


def take_range(obj: Any, a: int, b: int) -> Any:
    """Samples ``a..b-1`` of a batched structure (tensor slices are views: no copy)."""
    if isinstance(obj, torch.Tensor | list):
        return obj[a:b]
    if isinstance(obj, Mapping):
        return {k: take_range(v, a, b) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(take_range(v, a, b) for v in obj)
    raise EvaluationError(f"cannot select samples from a {type(obj).__name__}.")


def concat(parts: list[Any], where: str = "the batches") -> Any:
    """Concatenate batched structures of the same form along their samples."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(p, torch.Tensor) for p in parts):
            raise EvaluationError(f"{where} mix tensors with {describe(next(p for p in parts if not isinstance(p, torch.Tensor)))}.")
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise EvaluationError(
                f"{where} have different shapes beyond the batch dimension ({', '.join(map(str, sorted(shapes)[:3]))}): "
                "pad every batch to one length, or pass a Dataset / DataLoader with a collate_fn so pruneviz can "
                "build its own chunks."
            )
        return torch.cat(parts)
    if isinstance(first, list):
        return [item for p in parts for item in p]
    if isinstance(first, Mapping):
        keys = list(first)
        if any(not isinstance(p, Mapping) or list(p) != keys for p in parts):
            raise EvaluationError(f"{where} are dicts with different keys: every batch needs the same keys {keys}.")
        return {k: concat([p[k] for p in parts], where) for k in keys}
    if isinstance(first, tuple):
        if any(not isinstance(p, tuple) or len(p) != len(first) for p in parts):
            raise EvaluationError(f"{where} are tuples of different lengths.")
        return tuple(concat([p[i] for p in parts], where) for i in range(len(first)))
    raise EvaluationError(f"{where} hold a {type(first).__name__}, which pruneviz cannot batch.")


# --------------------------------------------------------------------------- one batch
def split_batch(batch: Any, where: str = "a batch") -> Batch:
    """A batch as (inputs, targets): a 2-tuple/list, or a dict holding its labels under 'labels'."""
    batch = to_structure(batch)
    if isinstance(batch, Mapping):
        keys = [k for k in LABEL_KEYS if k in batch]
        if len(keys) == 1:
            return {k: v for k, v in batch.items() if k != keys[0]}, batch[keys[0]]
        raise EvaluationError(
            f"{where} is a dict with keys {sorted(map(str, batch))[:8]} and no single label key: pruneviz needs "
            f"(inputs, targets) pairs, or a dict that holds its targets under one of {', '.join(LABEL_KEYS)}."
        )
    if isinstance(batch, tuple | list) and len(batch) >= 2:
        if len(batch) > 2 and isinstance(batch, list) and all(isinstance(b, tuple | list) for b in batch):
            raise EvaluationError(f"{where} is {describe(batch)}: expected one (inputs, targets) pair.")
        return batch[0], batch[1]
    raise EvaluationError(
        f"{where} is {describe(batch)}: pruneviz needs (inputs, targets) pairs (a tuple of two, or a dict with "
        "a 'labels' key)."
    )


def _normalise_inputs(inputs: Any, n: int) -> Any:
    """A list of ``k != n`` tensors that each hold ``n`` samples is several inputs (a collated tuple), not one
    item per sample: make it a tuple."""
    if (isinstance(inputs, list) and len(inputs) != n and inputs
            and all(isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == n for t in inputs)):
        return tuple(inputs)
    return inputs


def check_pair(inputs: Any, targets: Any, where: str = "the data") -> int:
    """The number of samples of (inputs, targets), checking that they pair up."""
    n_t = length(targets, f"the targets of {where}")
    n_i = length(inputs, f"the inputs of {where}")
    if n_i != n_t:
        raise EvaluationError(
            f"{where} has {n_i} inputs but {n_t} targets ({describe(inputs)} vs {describe(targets)}): they must "
            "pair up one to one."
        )
    return n_t


# --------------------------------------------------------------------------- the sample set
@dataclass
class Samples:
    """A fixed list of samples as one batched (inputs, targets) structure; ``chunk(a, b)`` is a batch."""

    inputs: Any
    targets: Any

    def __post_init__(self) -> None:
        self.n = check_pair(self.inputs, self.targets)

    def __len__(self) -> int:
        return self.n

    def chunk(self, a: int, b: int) -> Batch:
        return take_range(self.inputs, a, b), take_range(self.targets, a, b)

    def subset(self, order: Sequence[int] | torch.Tensor) -> Samples:
        """The samples ``order`` (contiguous copies of tensors, so chunks are views of one block)."""
        def contiguous(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.contiguous()
            if isinstance(x, Mapping):
                return {k: contiguous(v) for k, v in x.items()}
            if isinstance(x, tuple):
                return tuple(contiguous(v) for v in x)
            return x
        return Samples(contiguous(take(self.inputs, order)), contiguous(take(self.targets, order)))

    def input(self, i: int) -> Any:
        """Sample ``i``'s input, unbatched."""
        return _item(self.inputs, i)

    def target(self, i: int) -> Any:
        return _item(self.targets, i)


def _item(obj: Any, i: int) -> Any:
    if isinstance(obj, torch.Tensor | list):
        return obj[i]
    if isinstance(obj, Mapping):
        return {k: _item(v, i) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_item(v, i) for v in obj)
    return obj


def _is_frame(x: Any) -> bool:
    """A pandas DataFrame or Series (duck-typed: pandas is not a dependency)."""
    return type(x).__name__ in ("DataFrame", "Series") and callable(getattr(x, "to_numpy", None))


def _is_arrayish(x: Any) -> bool:
    return isinstance(x, torch.Tensor | np.ndarray) or _is_frame(x)


def is_whole_pair(data: Any) -> bool:
    """(inputs, targets) for the whole data set, as opposed to a list of batches: the second element is a
    target structure (a tensor or array, or a list of per-sample dicts), not a batch."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        return False
    inputs, targets = data
    targets_ok = _is_arrayish(targets) or (isinstance(targets, list) and (not targets or isinstance(targets[0], Mapping)))
    return targets_ok and (_is_arrayish(inputs) or isinstance(inputs, Mapping | tuple | list))


def _dataset_items(dataset: Dataset, indices: Iterable[int] | None) -> list[Any]:
    idx = range(len(dataset)) if indices is None else indices  # type: ignore[arg-type]
    return [dataset[i] for i in idx]


def _sampler_indices(loader: DataLoader) -> list[int] | None:
    """The dataset indices a map-style loader visits (its sampler's), deduplicated and sorted: a shuffling
    loader gives the same evaluation set every time."""
    from torch.utils.data import BatchSampler

    # the loader's own batching (batch_size, drop_last) wraps its sampler: read the sampler, so drop_last does
    # not lose samples; a batch_sampler the user gave decides which samples there are
    auto = isinstance(loader.batch_sampler, BatchSampler) and loader.batch_sampler.sampler is loader.sampler
    sampler = loader.sampler if auto or loader.batch_sampler is None else loader.batch_sampler
    try:
        flat: list[int] = []
        for item in sampler:
            flat.extend(item if isinstance(item, list | tuple) else [item])
    except TypeError:
        return None
    return sorted({int(i) for i in flat})


def _collate_items(items: list[Any], collate: Any, where: str) -> Batch:
    try:
        batch = collate(items)
    except Exception as e:  # noqa: BLE001 - a user's collate function: name it and its error
        raise EvaluationError(
            f"the collate function {getattr(collate, '__name__', type(collate).__name__)} raised "
            f"{type(e).__name__} on {len(items)} samples of {where}: {str(e)[:300]}. Fix it, or pass the data as "
            "(inputs, targets) tensors."
        ) from e
    inputs, targets = split_batch(batch, f"a batch of {where}")
    return inputs, targets


def _from_batches(batches: Iterable[Any], where: str) -> Samples:
    ins, tgts = [], []
    try:
        for k, batch in enumerate(batches):
            inputs, targets = split_batch(batch, f"batch {k} of {where}")
            n = length(targets, f"the targets of batch {k} of {where}")
            inputs = _normalise_inputs(inputs, n)
            check_pair(inputs, targets, f"batch {k} of {where}")
            ins.append(inputs)
            tgts.append(targets)
    except EvaluationError:
        raise
    except Exception as e:  # noqa: BLE001 - a loader or collate function that raises
        raise EvaluationError(
            f"reading {where} raised {type(e).__name__}: {str(e)[:300]}. Check its Dataset and collate_fn."
        ) from e
    if not ins:
        raise EvaluationError(f"{where} is empty: pass at least one (input, target) sample.")
    return Samples(concat(ins, f"the batches of {where}"), concat(tgts, f"the batches of {where}"))


def as_samples(data: Any, where: str = "the evaluation data") -> Samples:
    """Every sample of ``data`` (see the module docstring for the forms) as one :class:`Samples`."""
    if is_whole_pair(data):
        inputs, targets = to_structure(data[0]), to_structure(data[1])
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 0 or isinstance(targets, torch.Tensor) and targets.dim() == 0:
            raise EvaluationError(
                f"inputs {describe(inputs)} and targets {describe(targets)}: both need a batch dimension "
                "(one row per sample)."
            )
        if length(targets, f"the targets of {where}") == 0:
            raise EvaluationError(f"{where} is empty: pass at least one (input, target) sample.")
        return Samples(_normalise_inputs(inputs, length(targets)), targets)
    if isinstance(data, DataLoader):
        if not isinstance(data.dataset, IterableDataset):
            indices = _sampler_indices(data)
            items = _dataset_items(data.dataset, indices)
            if not items:
                raise EvaluationError(f"{where} is empty: pass at least one (input, target) sample.")
            return _from_batches([_collate_items(items, data.collate_fn, where)], where)
        return _from_batches(data, where)
    if isinstance(data, IterableDataset):
        return _from_batches(DataLoader(data, batch_size=256), where)
    if isinstance(data, Dataset):
        from torch.utils.data import default_collate

        items = _dataset_items(data, None)
        if not items:
            raise EvaluationError(f"{where} is empty: pass at least one (input, target) sample.")
        return _from_batches([_collate_items(items, default_collate, where)], where)
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping | torch.Tensor | np.ndarray):
        return _from_batches(data, where)
    raise EvaluationError(
        f"{where} of type {type(data).__name__} is not supported: pass (inputs, targets) tensors or arrays, a "
        "torch Dataset, a DataLoader, or a list of (inputs, targets) batches."
    )


def as_batches(data: Any, batch_size: int = 64, where: str = "the calibration data",
               limit: int | None = None) -> list[Batch]:
    """``data`` in any of the forms above as a list of (inputs, targets) batches (a list of batches and a
    DataLoader keep their batches; tensors and Datasets are cut into ``batch_size`` samples); at most ``limit``
    batches are read."""
    if data is None:
        return []
    if isinstance(data, DataLoader):
        try:
            return [split_batch(b, f"a batch of {where}") for b, _ in zip(data, range(limit or 2**62), strict=False)]
        except EvaluationError:
            raise
        except Exception as e:  # noqa: BLE001 - a loader or collate function that raises
            raise EvaluationError(f"reading {where} raised {type(e).__name__}: {str(e)[:300]}.") from e
    if not is_whole_pair(data) and not isinstance(data, Dataset) and isinstance(data, Iterable) and not isinstance(
            data, str | bytes | Mapping | torch.Tensor | np.ndarray):
        out = []
        for k, b in enumerate(data):
            if limit is not None and k >= limit:
                break
            inputs, targets = split_batch(b, f"batch {k} of {where}")
            n = length(targets, f"the targets of batch {k} of {where}")
            inputs = _normalise_inputs(inputs, n)
            check_pair(inputs, targets, f"batch {k} of {where}")
            out.append((inputs, targets))
        if not out:
            raise EvaluationError(f"{where} gave no batches: pass at least one (inputs, targets) batch.")
        return out
    samples = as_samples(data, where)
    starts = range(0, len(samples), batch_size)
    return [samples.chunk(a, min(a + batch_size, len(samples))) for a in list(starts)[:limit]]


def first_input(data: Any, n: int = 1) -> Any:
    """The inputs of the first ``n`` samples of ``data`` (e.g. an example input for FLOPs)."""
    if isinstance(data, Samples):
        return take_range(data.inputs, 0, n)
    return take_range(as_samples(data).inputs, 0, n)


class SampleBatches:
    """Shuffled mini-batches of :class:`Samples` (a DataLoader for any batch structure), reproducible from
    ``seed``; like the training DataLoader, a last batch of one sample is dropped (BatchNorm needs two)."""

    def __init__(self, samples: Samples, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.samples, self.batch_size, self.shuffle = samples, int(batch_size), shuffle
        self.gen = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n, b = len(self.samples), self.batch_size
        return n // b + (1 if n % b > 1 else 0) if n > 1 else 1

    def __iter__(self):
        n = len(self.samples)
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield take(self.samples.inputs, idx), take(self.samples.targets, idx)


class BatchList:
    """A list of (inputs, targets) batches, visited in a seeded random order every epoch."""

    def __init__(self, batches: list[Batch], seed: int, shuffle: bool = True) -> None:
        self.batches, self.shuffle = batches, shuffle
        self.gen = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        order = torch.randperm(len(self.batches), generator=self.gen).tolist() if self.shuffle else range(len(self))
        for k in order:
            yield self.batches[k]
