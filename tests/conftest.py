"""Shared fixtures: small models of each kind and synthetic data (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

BROWSER_TESTS = Path(__file__).parent / "ui"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist (``-n 2 --dist loadgroup``, scripts/test.sh): the real-browser tests run one after another
    on one worker (one Chromium, servers on their own ports), everything else shares the other core's time."""
    for item in items:
        if BROWSER_TESTS in Path(item.fspath).parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


class TinyCNN(nn.Module):
    """Conv+BN blocks, a transposed conv, a Linear head: every target kind in one small model."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
            nn.ConvTranspose2d(12, 6, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class TinyRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.gru = nn.GRU(16, 12, batch_first=True, bidirectional=True)
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))
        h, _ = self.gru(h)
        return self.head(h[:, -1])


def seeded(factory, seed: int = 0):
    torch.manual_seed(seed)
    return factory().eval()


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    return seeded(TinyCNN)


@pytest.fixture
def tiny_rnn() -> TinyRNN:
    return seeded(TinyRNN)


@pytest.fixture
def cnn_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(3)]


@pytest.fixture(scope="session")
def _resnet18_template() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture
def resnet18(_resnet18_template) -> nn.Module:
    """A fresh copy of a torchvision ResNet-18 (weights=None, seeded, 10 classes) for each test."""
    import copy

    return copy.deepcopy(_resnet18_template)


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """One intra-op thread for a module (restored after): as fast for the small demo models, and immune to
    OpenMP oversubscription when the 2-core machine is busy (measured: the Wilson stress test took 0.7 s
    idle, 28 s with 2 threads under load, 2-3 s with 1 thread under the same load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    """The digits test split as (x, y) tensors."""
    from pruneviz.data import digits_tensors

    return digits_tensors("test")
