"""Demo models for text, audio and tabular data, with committed pretrained checkpoints.

- :class:`TextGRU`, :class:`TextTransformer`: Rotten Tomatoes snippets (padded token ids, 0 = padding).
- :class:`AudioCNN`: spoken digits (log-mel spectrograms from :func:`pruneviz.data.audio.log_mel`).
- :class:`TabularMLP`: scikit-learn's breast cancer / wine tables (raw feature values: the model
  standardises them itself with the train split's mean and std, stored as buffers).

Input checks live in ``torch.fx``-wrapped functions, so the audio and tabular models still trace as a
chain of stages. Checkpoints (``checkpoints/<name>.pt``) are written by
``python -m pruneviz.data.train_modalities``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from pruneviz.core.errors import PrunevizError

from .models import CHECKPOINT_DIR, DemoCheckpointError

__all__ = [
    "MODALITY_MODELS",
    "AudioCNN",
    "ModelInputError",
    "Standardize",
    "TabularMLP",
    "TextGRU",
    "TextTransformer",
    "build_modality_model",
    "check_audio_features",
    "check_features",
    "check_token_ids",
    "load_modality_model",
    "modality_checkpoint_meta",
    "modality_checkpoint_path",
]

TRAIN_COMMAND = "python -m pruneviz.data.train_modalities"


class ModelInputError(PrunevizError):
    """An input tensor that a demo model cannot take (wrong type, shape, ids or values)."""


def check_token_ids(ids: Any, vocab_size: int, max_len: int | None = None) -> torch.Tensor:
    """Validate padded token ids: an int64-able (N, L) tensor with 0 <= id < vocab_size, one token per row."""
    if isinstance(ids, PackedSequence):
        raise ModelInputError(
            "Text models take padded token ids (N, L) with 0 as padding, not a PackedSequence: pass the "
            "padded id tensor (e.g. TextSplit.encode(texts))."
        )
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        what = f"a {ids.dtype} tensor" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ModelInputError(f"Text models take an integer tensor of token ids (N, L); got {what}.")
    if ids.ndim != 2:
        raise ModelInputError(f"Text models take token ids of shape (N, L); got shape {tuple(ids.shape)}.")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ModelInputError(
                f"Token ids must lie in [0, {vocab_size - 1}] (vocabulary size {vocab_size}); got min {lo}, "
                f"max {hi}. Encode text with the checkpoint's vocabulary (unknown words -> 1)."
            )
    if max_len is not None and ids.shape[1] > max_len:
        raise ModelInputError(f"This model takes at most {max_len} tokens per row; got {ids.shape[1]}: truncate.")
    empty = (ids != 0).sum(1) == 0
    if bool(empty.any()):
        raise ModelInputError(
            f"Rows {empty.nonzero().flatten()[:5].tolist()} hold only padding (0); give each row at least "
            "one token (unknown words are 1)."
        )
    return ids.long()


def check_features(x: Any, n_features: int, feature_names: Sequence[str] | None = None) -> torch.Tensor:
    """Validate a float (N, n_features) table without NaN/inf; return it as float32."""
    if not isinstance(x, torch.Tensor) or x.is_complex():
        raise ModelInputError(f"Tabular models take a float tensor (N, {n_features}); got {type(x).__name__}.")
    if x.ndim != 2 or x.shape[1] != n_features:
        got = x.shape[1] if x.ndim == 2 else f"shape {tuple(x.shape)}"
        raise ModelInputError(f"Tabular model expects {n_features} feature columns (N, {n_features}); got {got}.")
    x = x.float()
    bad = (~torch.isfinite(x)).any(0)
    if bool(bad.any()):
        cols = bad.nonzero().flatten().tolist()
        names = [feature_names[c] if feature_names else f"column {c}" for c in cols]
        raise ModelInputError(f"NaN or inf in feature(s) {', '.join(map(str, names[:8]))}: impute or drop them.")
    return x


def check_audio_features(x: Any, n_mels: int) -> torch.Tensor:
    """Validate log-mels (N, 1, n_mels, frames) or (N, n_mels, frames); return (N, n_mels, frames)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ModelInputError(f"AudioCNN takes float log-mel spectrograms (N, 1, {n_mels}, frames); got {what}.")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1] != n_mels:
        raise ModelInputError(
            f"AudioCNN takes log-mels (N, 1, {n_mels}, frames) or (N, {n_mels}, frames); got shape "
            f"{tuple(x.shape)}. Compute them from 1 s waveforms with pruneviz.data.audio.log_mel."
        )
    if x.shape[2] < 4:
        raise ModelInputError(f"AudioCNN needs at least 4 frames; got {x.shape[2]}.")
    if not bool(torch.isfinite(x).all()):
        raise ModelInputError("NaN or inf in the log-mel features; compute them with log_mel (it floors at -80 dB).")
    return x.float()


for _fn in ("check_token_ids", "check_features", "check_audio_features"):
    torch.fx.wrap(_fn)


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed buffers (computed on a train split, saved with the state dict)."""

    def __init__(self, mean: torch.Tensor | float = 0.0, std: torch.Tensor | float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextGRU(nn.Module):
    """Embedding -> 1-layer GRU -> masked mean + max pooling of its outputs -> Linear (2 classes).

    Takes padded ids (N, L), 0 = padding at the end; padding never enters the pooled features (no packed
    sequences: the GRU is unidirectional, so the states at real tokens never saw padding).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 64, num_classes: int = 2,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embed_dim, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = check_token_ids(ids, self.vocab_size)
        mask = ids != 0
        h = self.gru(self.dropout(self.embedding(ids)))[0]
        pooled_max = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return self.head(self.dropout(torch.cat([_masked_mean(h, mask), pooled_max], 1)))


class TextTransformer(nn.Module):
    """Embedding + learned positions -> one TransformerEncoderLayer (padding masked) -> masked mean -> Linear.

    The attention's packed ``in_proj_weight`` (3 * d_model, d_model) is what attention pruning targets.
    """

    def __init__(self, vocab_size: int, max_len: int = 48, d_model: int = 64, nhead: int = 4,
                 dim_feedforward: int = 128, num_classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.position = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = check_token_ids(ids, self.vocab_size, self.max_len)
        mask = ids != 0
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.embedding(ids) + self.position(pos)[None]
        h = self.encoder(x, src_key_padding_mask=~mask)
        return self.head(self.dropout(_masked_mean(h, mask)))


class AudioCNN(nn.Module):
    """Conv1d over time with the mel bands as channels: 4 conv+BatchNorm+ReLU blocks, global pool, Linear."""

    def __init__(self, n_mels: int = 32, num_classes: int = 10, width: int = 48,
                 mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.norm = Standardize(mean, std)

        def block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
            return [nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]

        w2 = width * 3 // 2
        self.features = nn.Sequential(
            *block(n_mels, width, 5), *block(width, width, 5), nn.MaxPool1d(2),
            *block(width, w2, 3), nn.MaxPool1d(2), *block(w2, w2, 3),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(w2, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_audio_features(x, self.n_mels)
        return self.classifier(self.features(self.norm(x)))


class TabularMLP(nn.Module):
    """Standardize (train mean/std buffers) -> Linear/ReLU hidden layers -> Linear; takes raw features."""

    def __init__(self, n_features: int, n_classes: int, hidden: Sequence[int] = (64, 32),
                 feature_names: Sequence[str] | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_features = n_features
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.norm = Standardize(torch.zeros(n_features), torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_features(x, self.n_features, self.feature_names)
        return self.head(self.body(self.norm(x)))


#: Model name -> (class, one-line description).
MODALITY_MODELS: dict[str, tuple[type[nn.Module], str]] = {
    "text_gru": (TextGRU, "TextGRU: embedding, 1-layer GRU, mean+max pooling (Rotten Tomatoes, 2 classes)"),
    "text_transformer": (TextTransformer, "TextTransformer: embedding + positions, 1 encoder layer, 4 heads "
                         "(Rotten Tomatoes, 2 classes)"),
    "audio_cnn": (AudioCNN, "AudioCNN: 4 Conv1d+BatchNorm blocks over log-mels (spoken digits, 10 classes)"),
    "tabular_mlp": (TabularMLP, "TabularMLP: standardise, 30-64-32-2 (sklearn breast cancer)"),
    "wine_mlp": (TabularMLP, "TabularMLP: standardise, 13-64-32-3 (sklearn wine)"),
}


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in MODALITY_MODELS:
        raise ValueError(f"Unknown demo model {name!r}; valid names are: {', '.join(map(repr, MODALITY_MODELS))}.")
    return key


def modality_checkpoint_path(name: str) -> Path:
    """Path of the committed checkpoint of demo model ``name``."""
    return CHECKPOINT_DIR / f"{_canonical(name)}.pt"


def build_modality_model(name: str, **config: Any) -> nn.Module:
    """Build demo model ``name`` with fresh weights from its constructor ``config`` (train mode)."""
    return MODALITY_MODELS[_canonical(name)][0](**config)


def _read(name: str, checkpoint: str | os.PathLike[str] | None) -> tuple[str, Path, dict[str, Any]]:
    key = _canonical(name)
    path = Path(checkpoint) if checkpoint is not None else modality_checkpoint_path(key)
    hint = f"Rebuild the demo checkpoints with `{TRAIN_COMMAND} --models {key}`."
    ckpt = _read_file(path, MODALITY_MODELS[key][0].__name__, hint)
    meta = ckpt.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or meta.get("name") != key:
        raise DemoCheckpointError(f"Demo checkpoint {str(path)!r} is not a {key!r} checkpoint (meta). {hint}")
    return key, path, ckpt


def _read_file(path: Path, arch: str, hint: str) -> dict[str, Any]:
    if not path.is_file():
        raise DemoCheckpointError(f"Demo checkpoint {str(path)!r} not found. {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling / zip error means the file is unusable
        raise DemoCheckpointError(
            f"Demo checkpoint {str(path)!r} is corrupt or unreadable ({type(exc).__name__}). {hint}"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise DemoCheckpointError(f"Demo checkpoint {str(path)!r} has no 'state_dict'. {hint}")
    if ckpt.get("arch") != arch:
        raise DemoCheckpointError(
            f"Demo checkpoint {str(path)!r} holds arch {ckpt.get('arch')!r}, expected {arch!r}. {hint}"
        )
    return ckpt


def load_modality_model(name: str, checkpoint: str | os.PathLike[str] | None = None) -> nn.Module:
    """Demo model ``name`` (see :data:`MODALITY_MODELS`) with its pretrained weights, in eval mode.

    A missing, corrupt or foreign checkpoint raises :class:`~pruneviz.data.models.DemoCheckpointError`.
    """
    key, path, ckpt = _read(name, checkpoint)
    try:
        model = build_modality_model(key, **ckpt["meta"]["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DemoCheckpointError(
            f"Demo checkpoint {str(path)!r} does not fit {MODALITY_MODELS[key][0].__name__}: {exc}. "
            f"Rebuild it with `{TRAIN_COMMAND} --models {key}`."
        ) from exc
    return model.eval()


def modality_checkpoint_meta(name: str, checkpoint: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ``meta`` dict (config, accuracies, vocab / feature names, ...) of a demo checkpoint."""
    return dict(_read(name, checkpoint)[2]["meta"])
