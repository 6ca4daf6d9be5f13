"""A big model's explorer opens before the unpruned model is measured: the worker measures it first and the views
set up when it arrives (the baseline is held back here by a forward that waits for a gate)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from pruneviz.core.errors import PrunevizError
from pruneviz.core.live import LiveEvaluator
from pruneviz.core.session import PruningSession

GATE = threading.Event()  # module-level: the live evaluator deep-copies the model


class Gated(nn.Module):
    """A small classifier whose batch forwards (more than 2 samples: not the probe) wait for ``GATE``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            GATE.wait(30)
        return self.net(x)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(60, 8, generator=g), torch.randint(0, 3, (60,), generator=g)


def test_views_wait_for_the_baseline_then_show_it(make_explorer):
    GATE.clear()
    model = Gated()
    x, y = _data()
    app = make_explorer(model, (x, y), background_baseline=True, prefix_cache=False)
    # the explorer is open while the baseline is still being measured
    assert not app.live.baseline_ready
    assert "measuring" in app.accuracy.baseline_label.value and app.accuracy.trail == {}
    assert "Measuring the unpruned model" in app.changes.header.value
    GATE.set()
    assert app.live.wait_idle(30)
    base = app.live.baseline
    with torch.no_grad():
        want = (model.net(x).argmax(1) == y).float().mean().item()
    assert abs(base.accuracy - want) < 1e-6
    assert "unpruned: accuracy" in app.accuracy.baseline_label.value
    assert list(app.accuracy.trail.values()) == [{0.0: 100 * base.accuracy}]  # the trail's first point
    assert "Measuring" not in app.changes.header.value
    app.session.set_global_sparsity(0.5)
    assert app.live.wait_idle(30)
    assert sorted(next(iter(app.accuracy.trail.values()))) == [0.0, 50.0]


def test_baseline_read_waits_and_a_failed_measure_is_a_clear_error():
    class Broken(Gated):
        def forward(self, x):
            if x.shape[0] > 2:
                raise ValueError("bad batch")
            return self.net(x)

    x, y = _data()
    s = PruningSession(Broken())
    live = LiveEvaluator(s, (x, y), background_baseline=True, prefix_cache=False)
    try:
        assert live.wait_idle(30)
        assert "bad batch" in (live.last_error or "")
        with pytest.raises(PrunevizError, match="could not be evaluated"):
            _ = live.baseline
    finally:
        live.close()
