"""Helpers shared by the widget tests (imported as a plain module: pytest puts this folder on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from pruneviz.widgets import Explorer


def move(app: Explorer, value: float, via_state: bool = False) -> None:
    """Move the global slider to ``value`` (a fraction; the slider counts in percent) like the front end
    would, then wait for evaluation and FLOPs."""
    slider = app.controls.global_slider
    percent = round(100 * value, 6)
    if via_state:
        slider.set_state({"value": percent})
    else:
        slider.value = percent
    assert app.wait_idle(30), "evaluation did not finish"


class Bomb(nn.Module):
    """Raises while ``Flaky.fail`` is set. A submodule, so it runs at call time even when the live
    evaluator executes the model as a traced chain of stages."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if Flaky.fail:
            raise RuntimeError("boom: the accelerator caught fire")
        return x


class Flaky(nn.Module):
    """A small CNN whose forward raises while ``Flaky.fail`` is set (a class attribute, so the live
    evaluator's private copy of the model sees it too)."""

    fail = False

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bomb = Bomb()
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bomb(self.conv(x))).flatten(1))
