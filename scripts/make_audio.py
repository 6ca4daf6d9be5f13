"""Synthesise the spoken-digits dataset with espeak-ng and write its log-mel splits.

    python scripts/make_audio.py                               # the shipped test split (package data)
    python scripts/make_audio.py --splits train val --out-dir /tmp/audio   # the training splits

Each voice is an espeak-ng language voice plus a variant ("de+m3"); English and other languages all say the
English words "zero".."nine". Train, val and test use disjoint voices: the test voices' languages *and*
variants are never heard in training. Each clip gets a random espeak speed and pitch, then a seeded
augmentation: tempo/speed change (resampling), silence trim, random time shift inside the 1 s window,
random gain, an optional band-limiting filter and additive white/pink/brown noise at a random SNR.
espeak-ng output is deterministic per (voice, speed, pitch) and every clip's randomness comes from
``numpy.random.default_rng([seed, split, index])``, so a given seed reproduces the split exactly.
Needs ``/usr/bin/espeak-ng`` (Debian package ``espeak-ng``), numpy and scipy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pruneviz.data.audio import (  # noqa: E402
    AUDIO_CLASSES,
    AUDIO_TEST_FILE,
    HOP_MS,
    N_MELS,
    SAMPLE_RATE,
    WIN_MS,
    log_mel,
    quantise,
)

ESPEAK = "espeak-ng"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Disjoint language and variant pools per split: test voices share neither with training.
LANGUAGES = {
    "train": ["en-us", "en-gb", "en-gb-scotland", "en-029", "de", "nl", "sv", "fr-fr", "es", "it",
              "pt", "pl", "cs", "fi", "hu", "tr", "ro", "id"],
    "val": ["en-gb-x-gbclan", "da", "sk", "hr"],
    "test": ["en-us-nyc", "en-gb-x-rp", "nb", "pt-br", "af", "et"],
}
VARIANTS = {
    "train": ["m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt2", "croak", "Andy",
              "Annie", "adam", "edward", "linda", "max", "iven", "steph", "quincy"],
    "val": ["m6", "f4", "klatt3", "benjamin"],
    "test": ["m7", "f5", "klatt4", "grandpa", "anika", "michel"],
}
#: (voices, (speed, pitch) draws per voice and digit, augmented copies per synthesised clip) per split.
SIZES = {"train": (60, 2, 3), "val": (10, 3, 1), "test": (18, 4, 1)}


class SynthesisError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak_version() -> str:
    """The espeak-ng version line, or raise :class:`SynthesisError` if it is not installed."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise SynthesisError(
            "espeak-ng is not installed: `sudo apt-get install espeak-ng` (Debian/Ubuntu), then rerun "
            "`python scripts/make_audio.py`. The shipped test split needs no synthesiser."
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().split("  Data at:")[0]


def voices(split: str, seed: int = 0) -> list[str]:
    """The split's voices: a seeded sample of its language x variant pairs ("de+m3", ...)."""
    pairs = [f"{lang}+{var}" for lang in LANGUAGES[split] for var in VARIANTS[split]]
    rng = np.random.default_rng([seed, SPLIT_CODES[split], 999])
    n = min(SIZES[split][0], len(pairs))
    return sorted(pairs[i] for i in rng.choice(len(pairs), size=n, replace=False))


def synthesise(voice: str, word: str, speed: int, pitch: int) -> np.ndarray:
    """One espeak-ng utterance as float32 samples at 22,050 Hz."""
    cmd = [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    res = subprocess.run(cmd, capture_output=True, check=False)
    pos = res.stdout.find(b"data")
    if res.returncode != 0 or pos < 0 or len(res.stdout) < pos + 100:
        raise SynthesisError(f"espeak-ng failed for {cmd}: {res.stderr.decode(errors='replace').strip()}")
    pcm = np.frombuffer(res.stdout[pos + 8 :], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def _coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.arange(len(spec)), 1.0)
    spec /= np.sqrt(f) if kind == "pink" else f  # pink 1/f power, brown 1/f^2
    return np.fft.irfft(spec, n)


def augment(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """22,050 Hz utterance -> 1 s at 8 kHz, tempo-changed, shifted, scaled, filtered, noisy; and its SNR."""
    n_out = SAMPLE_RATE
    rate = rng.uniform(0.85, 1.2)  # >1: faster and higher
    x = signal.resample_poly(clean.astype(np.float64), 160, int(round(441 * rate)))
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    x = x[max(loud[0] - 40, 0) : loud[-1] + 40]
    if len(x) > n_out:  # a long word: keep a random 1 s window of it
        start = rng.integers(0, len(x) - n_out + 1)
        x = x[start : start + n_out]
    out = np.zeros(n_out)
    shift = rng.integers(0, n_out - len(x) + 1)
    out[shift : shift + len(x)] = x
    if rng.random() < 0.4:  # a band-limited channel (telephone-like)
        lo, hi = rng.uniform(80, 400), rng.uniform(1800, 3800)
        sos = signal.butter(2, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        out = signal.sosfilt(sos, out)
    speech_power = float(np.mean(out[shift : shift + len(x)] ** 2)) + 1e-12
    snr_db = float(rng.uniform(0.0, 24.0))
    noise = _coloured_noise(n_out, str(rng.choice(["white", "pink", "brown"])), rng)
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10) / (np.mean(noise**2) + 1e-12))
    out = out + noise
    out *= rng.uniform(0.05, 0.9) / (np.abs(out).max() + 1e-12)  # random gain (peak level)
    return out.astype(np.float32), snr_db


def build_split(
    split: str, seed: int = 0, verbose: bool = True, max_voices: int | None = None
) -> dict[str, np.ndarray]:
    """Synthesise and augment one split; return the arrays of its ``audio_digits_<split>.npz``.

    ``max_voices`` keeps only the first voices (their clips equal the head of the full split).
    """
    version = espeak_version()
    names = voices(split, seed)[:max_voices]
    _, draws, copies = SIZES[split]
    waves, labels, voice_ids, snrs, speeds, pitches = [], [], [], [], [], []
    t0 = time.perf_counter()
    index = 0
    for v, voice in enumerate(names):
        for label, word in enumerate(AUDIO_CLASSES):
            for _ in range(draws):
                rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
                speed, pitch = int(rng.integers(110, 201)), int(rng.integers(20, 81))
                clean = synthesise(voice, word, speed, pitch)
                for _ in range(copies):
                    wave, snr = augment(clean, rng)
                    waves.append(wave)
                    labels.append(label)
                    voice_ids.append(v)
                    snrs.append(snr)
                    speeds.append(speed)
                    pitches.append(pitch)
                index += 1
        if verbose and (v + 1) % 10 == 0:
            print(f"  [{split}] {v + 1}/{len(names)} voices, {len(waves)} clips, {time.perf_counter() - t0:.1f}s")
    feats = log_mel(np.stack(waves))
    q, scale, offset = quantise(feats)
    return {
        "features": q,
        "labels": np.asarray(labels, dtype=np.int8),
        "voice_ids": np.asarray(voice_ids, dtype=np.int16),
        "voices": np.asarray(names),
        "snr_db": np.asarray(snrs, dtype=np.float16),
        "speed": np.asarray(speeds, dtype=np.int16),
        "pitch": np.asarray(pitches, dtype=np.int16),
        "scale": np.float64(scale),
        "offset": np.float64(offset),
        "seed": np.int64(seed),
        "sample_rate": np.int64(SAMPLE_RATE),
        "n_mels": np.int64(N_MELS),
        "win_ms": np.float64(WIN_MS),
        "hop_ms": np.float64(HOP_MS),
        "espeak_version": np.asarray(version),
    }


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """``np.savez_compressed`` atomically (temporary file in the same folder + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", choices=sorted(SPLIT_CODES), default=["test"])
    parser.add_argument("--out-dir", type=Path, default=AUDIO_TEST_FILE.parent)
    args = parser.parse_args(argv)
    for split in args.splits:
        t0 = time.perf_counter()
        arrays = build_split(split, args.seed)
        path = args.out_dir / f"audio_digits_{split}.npz"
        write_npz(arrays, path)
        print(f"{split}: {len(arrays['labels'])} clips, {len(arrays['voices'])} voices, "
              f"{time.perf_counter() - t0:.1f}s -> {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
