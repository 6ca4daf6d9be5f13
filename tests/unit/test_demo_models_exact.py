"""Every criterion in every scope prunes exactly on each demo model of the text, audio and tabular data."""

from __future__ import annotations

import pytest

from pruneviz.core import CRITERIA, PruningSession
from pruneviz.data.demos import DEMOS

MODELS = ("text_gru", "text_transformer", "audio_cnn", "tabular_mlp")


@pytest.fixture(scope="module")
def demos():
    out = {}
    for name in MODELS:
        d = DEMOS[name]
        _, calib = d.data()
        out[name] = (d, calib[:2])
    return out


@pytest.mark.parametrize("name", MODELS)
def test_every_criterion_and_scope_is_exact(demos, name):
    demo, calib = demos[name]
    s = PruningSession(demo.load(), calib_data=calib, embeddings=demo.options().get("embeddings", False))
    for criterion in CRITERIA:
        try:
            s.set_criterion(criterion)
        except Exception as e:  # only BN-scale may refuse, on a model with no BatchNorm at all
            assert criterion == "bn_scale" and "BatchNorm" in str(e), e
            continue
        for scope in ("layer", "global", "structured"):
            s.set_scope(scope)
            s.set_global_sparsity(0.5)
            scored = [t for t in s.targets if s.supported(t.name)]
            for t in s.targets:
                if t not in scored:
                    assert s.zeros(t.name) == 0
                elif scope == "layer":
                    assert s.zeros(t.name) == round(0.5 * t.numel)
                elif scope == "structured" and t.name not in s.output_layers:
                    assert s.zeros(t.name) == round(0.5 * t.channels) * t.channel_size
            if scope == "global":
                assert sum(s.zeros(t.name) for t in scored) == round(0.5 * sum(t.numel for t in scored))
    s.reset()
    assert all((s.model.get_parameter(n) == s.original(n)).all() for n in s.names)
