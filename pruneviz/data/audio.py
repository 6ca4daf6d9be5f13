"""Spoken digits "zero".."nine": the shipped test split and log-mel features.

The clips are synthesised offline with ``espeak-ng`` by ``scripts/make_audio.py`` (many voices, speeds and
pitches, then noise, gain, time-shift and tempo augmentation; the test split's voices are never used for
training). Only the *features* of the test split ship with the package (``audio_digits_test.npz``: log-mel
spectrograms quantised to uint8 plus their scale/offset), so the app needs no synthesiser at run time.

Features (:func:`log_mel`): 1 s of 8 kHz audio -> 32 mel bands x 63 frames (25 ms Hann window, 16 ms hop,
``torch.stft`` and a triangular HTK-mel filterbank computed here; torchaudio is not used), in dB, floored
80 dB below each clip's peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pruneviz.core.errors import PrunevizError

__all__ = [
    "AUDIO_CLASSES",
    "AUDIO_TEST_FILE",
    "AudioError",
    "AudioSplit",
    "CLIP_SECONDS",
    "HOP_MS",
    "N_MELS",
    "SAMPLE_RATE",
    "WIN_MS",
    "dequantise",
    "load_audio_split",
    "log_mel",
    "mel_filterbank",
    "quantise",
    "split_from_arrays",
]

#: Class names, index == label.
AUDIO_CLASSES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 8000
CLIP_SECONDS = 1.0
N_MELS = 32
WIN_MS = 25.0
HOP_MS = 16.0
F_MIN, F_MAX = 20.0, 4000.0
TOP_DB = 80.0
#: Fixed dB range of the uint8 quantisation (values outside are clipped).
QUANT_RANGE = (-90.0, 40.0)

AUDIO_TEST_FILE = Path(__file__).resolve().parent / "audio_digits_test.npz"
AUDIO_VAL_FILE = Path(__file__).resolve().parent / "audio_digits_val.npz"
MAKE_COMMAND = "python scripts/make_audio.py"


class AudioError(PrunevizError):
    """Audio input or an audio data file that pruneviz cannot use."""


@dataclass(frozen=True)
class AudioSplit:
    """One split of the spoken digits: log-mel ``features`` float32 (N, 1, mels, frames), ``labels`` int64."""

    features: torch.Tensor
    labels: torch.Tensor
    voice_ids: torch.Tensor  # int64 (N,), index into ``voices``
    voices: list[str]  # espeak-ng voice names ("en-us+f3", ...)
    snr_db: np.ndarray  # float32 (N,), signal-to-noise ratio of the added noise
    classes: list[str]
    split: str
    meta: dict

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, labels)``, like a ``TensorDataset``."""
        return self.features, self.labels


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = 256, n_mels: int = N_MELS,
    f_min: float = F_MIN, f_max: float = F_MAX,
) -> torch.Tensor:
    """Triangular HTK-mel filters as a float32 (n_mels, n_fft // 2 + 1) matrix (peak 1 each)."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (centre - lo)
    down = (hi - freqs[None, :]) / (hi - centre)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    empty = np.flatnonzero(fb.sum(1) == 0)
    if len(empty):
        raise AudioError(f"Mel bands {empty.tolist()} cover no FFT bin; use fewer mels or a larger n_fft.")
    return torch.from_numpy(fb.astype(np.float32))


def _as_batch(waveforms: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    if isinstance(waveforms, (list, tuple)):
        if not waveforms:
            raise AudioError("log_mel got an empty list of waveforms.")
        arrays = [np.asarray(w) for w in waveforms]
        lengths = sorted({a.shape[-1] if a.ndim else 0 for a in arrays})
        if len(lengths) > 1 or any(a.ndim != 1 for a in arrays):
            raise AudioError(
                f"log_mel got a list of waveforms of different lengths/ranks (lengths {lengths[:5]}...). "
                f"Pad or trim every clip to one length (e.g. {int(SAMPLE_RATE * CLIP_SECONDS)} samples = "
                "1 s at 8 kHz), or pass one (N, samples) tensor."
            )
        waveforms = np.stack(arrays)
    x = torch.as_tensor(waveforms)
    if x.is_complex() or not (x.is_floating_point() or x.dtype == torch.int16):
        raise AudioError(f"log_mel needs real-valued waveforms (float, or int16 PCM), got dtype {x.dtype}.")
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    x = x.float()
    if x.ndim == 1:
        x = x[None]
    if x.ndim == 3 and x.shape[1] == 1:  # (N, 1, samples)
        x = x[:, 0]
    if x.ndim != 2:
        raise AudioError(f"log_mel needs waveforms of shape (samples,) or (N, samples), got {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise AudioError("log_mel got NaN or inf samples; clean the waveforms first.")
    return x


def log_mel(waveforms: torch.Tensor | np.ndarray | Sequence, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Log-mel spectrograms in dB, float32 (N, N_MELS, frames); 1 s clips give 63 frames.

    ``waveforms``: a (samples,) or (N, samples) float tensor/array in [-1, 1] (int16 PCM is scaled), or a
    list of equally long 1-D clips. The window (25 ms) and hop (16 ms) scale with ``sample_rate`` (>= 8000)
    and the bands always span 20 Hz-4 kHz, so 16 kHz input gives the same features as 8 kHz input.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < SAMPLE_RATE:
        raise AudioError(
            f"log_mel needs an integer sample_rate >= {SAMPLE_RATE} Hz, got {sample_rate!r}; resample to 8 kHz."
        )
    x = _as_batch(waveforms)
    win = int(round(sample_rate * WIN_MS / 1000.0))
    hop = int(round(sample_rate * HOP_MS / 1000.0))
    n_fft = 1 << math.ceil(math.log2(win))
    if x.shape[1] < n_fft // 2 + 1:
        raise AudioError(f"log_mel needs clips of at least {n_fft // 2 + 1} samples, got {x.shape[1]}.")
    window = torch.hann_window(win, periodic=True, dtype=torch.float32)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (N, bins, frames)
    mel = torch.matmul(mel_filterbank(int(sample_rate), n_fft), power)
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    floor = db.amax(dim=(1, 2), keepdim=True) - TOP_DB
    return torch.maximum(db, floor).contiguous()


def quantise(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, float, float]:
    """dB features -> (uint8 array, scale, offset) with ``features ~= q * scale + offset``."""
    lo, hi = QUANT_RANGE
    scale = (hi - lo) / 255.0
    f = np.asarray(features, dtype=np.float64)
    q = np.clip(np.rint((f - lo) / scale), 0, 255).astype(np.uint8)
    return q, scale, lo


def dequantise(q: np.ndarray, scale: float, offset: float) -> torch.Tensor:
    """uint8 codes -> float32 dB features."""
    return torch.from_numpy((q.astype(np.float32) * np.float32(scale) + np.float32(offset)).astype(np.float32))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise AudioError(f"Spoken-digits file {str(path)!r} not found. Rebuild it with `{MAKE_COMMAND}`.")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zip/format errors: the file is unusable
        raise AudioError(
            f"Spoken-digits file {str(path)!r} is corrupt ({type(exc).__name__}). Rebuild it with `{MAKE_COMMAND}`."
        ) from exc
    need = {"features", "labels", "voice_ids", "voices", "scale", "offset"}
    if not need <= data.keys() or data["features"].ndim != 3 or len(data["labels"]) != len(data["features"]):
        raise AudioError(
            f"Spoken-digits file {str(path)!r} lacks {sorted(need - data.keys()) or 'consistent arrays'}. "
            f"Rebuild it with `{MAKE_COMMAND}`."
        )
    return data


def split_from_arrays(data: dict[str, np.ndarray], split: str) -> AudioSplit:
    """Build an :class:`AudioSplit` from the arrays of an ``audio_digits_*.npz`` file."""
    feats = dequantise(data["features"], float(data["scale"]), float(data["offset"])).unsqueeze(1)
    meta = {k: data[k].item() for k in ("seed", "sample_rate", "n_mels", "hop_ms", "win_ms") if k in data}
    if "espeak_version" in data:
        meta["espeak_version"] = str(data["espeak_version"])
    return AudioSplit(
        features=feats.contiguous(),
        labels=torch.from_numpy(data["labels"].astype(np.int64)),
        voice_ids=torch.from_numpy(data["voice_ids"].astype(np.int64)),
        voices=[str(v) for v in data["voices"]],
        snr_db=data["snr_db"].astype(np.float32) if "snr_db" in data else np.full(len(feats), np.nan, np.float32),
        classes=list(AUDIO_CLASSES),
        split=split,
        meta=meta,
    )


@lru_cache(maxsize=2)
def _load_shipped(path: str) -> AudioSplit:
    return split_from_arrays(_read_npz(Path(path)), "val" if path == str(AUDIO_VAL_FILE) else "test")


def load_audio_split(split: str = "test", path: str | Path | None = None) -> AudioSplit:
    """Load a split of the spoken digits ("test" and "val" ship with the package, the validation split for
    calibrating the gradient criteria; cached: do not modify in place).

    ``path`` reads another ``audio_digits_*.npz`` written by ``scripts/make_audio.py``. The train split is
    synthesised on demand by the training script (it needs ``espeak-ng``).
    """
    if path is not None:
        return split_from_arrays(_read_npz(Path(path)), split)
    if split not in ("test", "val"):
        raise AudioError(
            f"Only the 'test' and 'val' splits of the spoken digits ship with pruneviz (got {split!r}); "
            f"synthesise the train split with `{MAKE_COMMAND} --splits train --out-dir DIR` (needs espeak-ng) "
            "and pass path=."
        )
    return _load_shipped(str(AUDIO_TEST_FILE if split == "test" else AUDIO_VAL_FILE))
