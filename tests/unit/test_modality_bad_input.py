"""Bad text, audio and tabular input: each a clear PrunevizError naming the cause and the way out, with the
session and the model's weights exactly as before."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pruneviz.core import PrunevizError, PruningSession
from pruneviz.core.live import LiveEvaluator
from pruneviz.data.modality_models import load_modality_model


class Recurrent(nn.Module):
    """A user's text model: Embedding -> LSTM -> Linear, returning (logits, hidden) like many RNN codebases."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, ids):
        h, state = self.lstm(self.embed(ids))
        return self.head(h[:, -1]), state


def frozen(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def check(model: nn.Module, data, match: str, **kwargs) -> None:
    session = PruningSession(model, scope="global")
    session.set_global_sparsity(0.3)
    before, plan, gen = frozen(model), session.plan, session.generation
    with pytest.raises(PrunevizError, match=match):
        LiveEvaluator(session, data, start=False, **kwargs)
    assert unchanged(model, before) and session.plan == plan and session.generation == gen


def test_tuple_outputs_say_how_to_pick_the_logits():
    ids, y = torch.randint(0, 50, (12, 7)), torch.randint(0, 2, (12,))
    check(Recurrent().eval(), (ids, y), r"returns a tuple .*pass output=0")
    s = PruningSession(Recurrent().eval())
    live = LiveEvaluator(s, (ids, y), output=0, start=False)
    assert live.baseline.accuracy is not None


def test_token_ids_beyond_the_vocabulary():
    ids, y = torch.randint(0, 80, (12, 7)), torch.randint(0, 2, (12,))
    check(Recurrent().eval(), (ids, y), r"token ids range from \d+ to \d+, but embed \(Embedding\) has 50 rows.*vocabulary",
          output=0)
    gru = load_modality_model("text_gru")
    check(gru, (torch.full((4, 48), 7000), torch.zeros(4, dtype=torch.long)), r"7000|vocabulary")


def test_padded_ids_longer_than_the_model_reads():
    model = load_modality_model("text_transformer")
    check(model, (torch.ones(4, 60, dtype=torch.long), torch.zeros(4, dtype=torch.long)), r"60|48")


def test_a_packed_sequence():
    ids = torch.randint(1, 50, (6, 5))
    packed = pack_padded_sequence(torch.nn.functional.one_hot(ids, 50).float(), torch.full((6,), 5),
                                  batch_first=True)

    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(50, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[1][-1])

    with pytest.raises(PrunevizError, match="PackedSequence.*padded"):
        from pruneviz.core.diagnose import diagnose

        message = diagnose(Packed(), packed)
        raise PrunevizError(message)
    gru = load_modality_model("text_gru")
    check(gru, [(packed, torch.zeros(6, dtype=torch.long))], r"PackedSequence|padded")


def test_variable_length_audio_that_is_not_padded():
    audio = load_modality_model("audio_cnn")
    clips = [torch.randn(1, 32, n) for n in (63, 50, 70, 63)]
    check(audio, (clips, torch.zeros(4, dtype=torch.long)), r"different shapes.*pad or trim")


def test_tabular_frames_with_nan_or_the_wrong_columns():
    table = load_modality_model("tabular_mlp")
    x = torch.randn(10, 30)
    x[3, 4] = float("nan")
    check(table, (x, torch.zeros(10, dtype=torch.long)), r"NaN or inf: 1 of 10 samples in columns \[4\]")
    check(table, (torch.randn(10, 29), torch.zeros(10, dtype=torch.long)), r"29.*30|30.*29")
