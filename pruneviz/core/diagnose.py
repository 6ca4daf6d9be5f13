"""Plain-words causes for the errors a model raises deep inside torch when the data does not fit it.

``diagnose(model, inputs, error)`` looks at the inputs and the model's first layers and says what does not
fit, in the user's terms: token ids beyond the embedding's vocabulary, the wrong number of input channels or
columns, a PackedSequence, unpadded variable-length inputs. It returns "" when it has nothing better to say
than torch's own message.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence


def _tensors(inputs: Any) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, dict):
        return [t for v in inputs.values() for t in _tensors(v)]
    if isinstance(inputs, tuple):
        return [t for v in inputs for t in _tensors(v)]
    return []


def _first(model: nn.Module, kinds: tuple[type, ...]) -> tuple[str, nn.Module] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, kinds)), None)


def diagnose(model: nn.Module, inputs: Any, error: BaseException | None = None) -> str:
    """A sentence naming why ``inputs`` do not fit ``model`` and the way out ("" if nothing is clear)."""
    if isinstance(inputs, PackedSequence) or any(isinstance(v, PackedSequence) for v in (
            inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, tuple | list) else ())):
        return ("the inputs are a PackedSequence: pruneviz batches samples itself, so pass padded tensors "
                "(ids of shape (N, L), padded at the end) and let the model mask the padding.")
    if isinstance(inputs, list) and inputs and all(isinstance(x, torch.Tensor) for x in inputs):
        shapes = {tuple(x.shape) for x in inputs}
        if len(shapes) > 1:
            return (f"the inputs are a list of {len(inputs)} tensors of different shapes ({', '.join(map(str, sorted(shapes)[:3]))}"
                    f"{', ...' if len(shapes) > 3 else ''}): pad or trim them to one length and pass one tensor (N, ...).")
    tensors = _tensors(inputs)
    ints = [t for t in tensors if not (t.is_floating_point() or t.is_complex()) and t.numel()]
    emb = _first(model, (nn.Embedding, nn.EmbeddingBag))
    if emb is not None and ints:
        name, module = emb
        hi, lo = max(int(t.max()) for t in ints), min(int(t.min()) for t in ints)
        if hi >= module.num_embeddings or lo < 0:
            return (f"the token ids range from {lo} to {hi}, but {name} ({type(module).__name__}) has "
                    f"{module.num_embeddings} rows (ids 0..{module.num_embeddings - 1}): encode the text with the "
                    "model's own vocabulary (and map unknown words to its <unk> id).")
    floats = [t for t in tensors if t.is_floating_point()]
    if floats and not all(bool(torch.isfinite(t).all()) for t in floats):
        return "the inputs contain NaN or inf values: drop or fill those rows (or columns) first."
    if len(tensors) == 1 and floats:
        x = floats[0]
        layer = _first(model, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase))
        if layer is not None:
            name, m = layer
            if isinstance(m, nn.modules.conv._ConvNd) and x.dim() >= 2 and x.shape[1] != m.in_channels:
                return (f"the inputs have {x.shape[1]} channels (shape {tuple(x.shape)}), but the first layer "
                        f"{name} ({type(m).__name__}) takes {m.in_channels}: pass inputs of shape (N, "
                        f"{m.in_channels}, ...).")
            if isinstance(m, nn.Linear) and x.dim() == 2 and x.shape[1] != m.in_features:
                return (f"the inputs have {x.shape[1]} columns, but the first layer {name} (Linear) takes "
                        f"{m.in_features}: pass the same features, in the same order, as the model was trained on.")
    return ""
