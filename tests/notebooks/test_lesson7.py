"""Lesson 7 (images, text, audio, tables): the curves and sensitivities it computes, its finding, its widget."""

from __future__ import annotations

import numpy as np
import pytest

from pruneviz.lessons import modalities


@pytest.fixture(scope="module")
def computed():
    return modalities.modality_curves(), modalities.text_sensitivity()


def test_every_modality_starts_at_its_baseline_and_loses_accuracy(computed):
    curves, _ = computed
    assert set(curves.acc) == set(modalities.MODELS)
    for m, acc in curves.acc.items():
        assert acc[0] == pytest.approx(curves.baseline[m])  # sparsity 0: the unpruned model
        assert acc[-1] < curves.baseline[m] - 0.02  # 98 % of every layer: clearly worse
        assert 0.0 <= curves.within(m) <= 0.98
    assert curves.baseline["text"] > 0.7 and curves.baseline["audio"] > 0.85


def test_text_layer_groups_are_measured_alone(computed):
    _, sens = computed
    assert list(sens.drop) == list(modalities.TEXT_LAYERS)
    for drops in sens.drop.values():
        assert len(drops) == len(sens.levels)
        assert drops[-1] >= drops[0] - 0.02  # more pruning of a layer does not help much
    assert sens.most_sensitive(0.8) in modalities.TEXT_LAYERS


def test_finding_and_widget(computed):
    curves, sens = computed
    f = modalities.finding(curves, sens)
    assert "Narang" in f.source and "no retraining" in f.ours
    assert f.numbers["table_within_1pt"] == curves.within("table")
    best = max(modalities.MODELS, key=curves.within)
    assert best in f.verdict
    app = modalities.widget()
    try:
        assert app.progress.max >= 1 and app.fig is not None
        app.curves, app.sens = curves, sens
        app._draw_sensitivity()
        assert np.allclose(app.fig.data[len(modalities.MODELS)].y, [100 * d[0] for d in sens.drop.values()])
        assert app.finding().numbers == f.numbers
    finally:
        app.close()
