"""The criterion race: points, seeds, curves, gaps, agreement, CSV, the session untouched, executors, bad input."""

from __future__ import annotations

import math
import statistics
import threading

import pytest
import torch

from pruneviz.core import CriterionError, InvalidSparsityError, PruningSession
from pruneviz.core.criteria_modern import LAMP
from pruneviz.core.masks import n_pruned
from pruneviz.core.race import criterion_race
from pruneviz.core.race_result import RaceError, t_interval
from pruneviz.data.demos import DEMOS

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")
SP = (0.3, 0.7)


@pytest.fixture(scope="module")
def demo():
    d = DEMOS["cnn"]
    data, calib = d.data()
    return d.load(), data, calib


@pytest.fixture(scope="module")
def race(demo):
    model, data, calib = demo
    return criterion_race(model, data, criteria=("magnitude", "random", "lamp", "wanda"),
                          scopes=("global", "layer", "structured"), sparsities=SP, seeds=2, calib_data=calib,
                          executor="inline")


def state_of(s: PruningSession) -> tuple:
    return ({k: v.clone() for k, v in s.model.state_dict().items()}, s.plan, s.history, s.generation,
            s.history_position)


def test_every_point_has_its_numbers(race, demo):
    model = demo[0]
    assert len(race.rows) == 4 * 3 * 2 * 2
    assert race.metric == "accuracy" and race.higher_is_better and race.percent
    total = sum(p.numel() for p in model.parameters())
    numel = {t.name: t.numel for t in PruningSession(model).targets}
    for r in race.rows:
        assert r.params_total == total and r.params_nonzero == total - r.pruned
        assert r.prunable == sum(numel.values())
        assert r.pruned == sum(round(r.layer_sparsity[n] * numel[n]) for n in numel)
        assert r.metrics["accuracy"] == r.value and 0 <= r.value <= 1
        assert r.flops_dense == race.rows[0].flops_dense > r.flops_sparse
        assert r.compression == pytest.approx(total / (total - r.pruned))
        if r.scope == "global":
            assert r.pruned == n_pruned(r.sparsity, r.prunable)
        elif r.scope == "layer":
            assert all(round(v * numel[n]) == n_pruned(r.sparsity, numel[n]) for n, v in r.layer_sparsity.items())
        if r.scope == "structured":
            assert r.channels_removed and r.flops_slim < r.flops_sparse and r.params_slim < r.params_nonzero
            assert "classifier.2.weight" not in r.channels_removed  # the output head is protected
        else:
            assert r.flops_slim is None and r.channels_removed is None


def test_seeds_reseed_random_and_repeat_deterministic_criteria(race):
    def values(c: str, scope: str, sp: float) -> list[float]:
        return [r.value for r in race.points(c, scope) if r.sparsity == sp]

    assert not race.resampled and race.seeds == (0, 1)
    for c in ("magnitude", "lamp", "wanda"):
        for s in race.scopes:
            for sp in SP:
                a, b = values(c, s, sp)
                assert a == b
    rand = [r for r in race.points("random", "layer") if r.sparsity == 0.3]
    assert rand[0].layer_sparsity == rand[1].layer_sparsity  # the same sparsities ...
    assert rand[0].value != rand[1].value  # ... but other weights: (almost surely) another accuracy


def test_curves_are_mean_and_sd_over_seeds(race):
    [curve] = [c for c in race.curves("weights") if c.criterion == "random" and c.scope == "global"]
    assert curve.sparsity == SP and curve.n == (2, 2)
    for i, sp in enumerate(SP):
        vals = [r.value for r in race.points("random", "global") if r.sparsity == sp]
        assert curve.y[i] == pytest.approx(statistics.mean(vals))
        assert curve.y_sd[i] == pytest.approx(statistics.stdev(vals))
        assert curve.x[i] == pytest.approx(100 * n_pruned(sp, race.rows[0].prunable) / race.rows[0].prunable)
    flops = {(c.criterion, c.scope): c for c in race.curves("flops")}
    assert all(0 < x < 100 for c in flops.values() for x in c.x)
    slim = race.curves("flops_slim")
    assert {c.scope for c in slim} == {"structured"}
    with pytest.raises(RaceError, match="Did you mean"):
        race.curves("flop")


def test_gap_to_random_is_paired_by_seed_with_a_t_interval(race):
    g = race.gap_to_random("magnitude", "global")
    rand = {(r.sparsity, r.seed): r.value for r in race.points("random", "global")}
    diffs = {(r.sparsity, r.seed): r.value - rand[(r.sparsity, r.seed)] for r in race.points("magnitude", "global")}
    assert g.mean == pytest.approx(statistics.mean(diffs.values()))
    per_seed = [statistics.mean(v for (sp, s), v in diffs.items() if s == seed) for seed in (0, 1)]
    mean, lo, hi = t_interval(per_seed)
    assert (g.low, g.high) == pytest.approx((lo, hi))
    half = 12.706 * statistics.stdev(per_seed) / math.sqrt(2)  # t(0.975, 1 df)
    assert hi - mean == pytest.approx(half)
    assert g.seeds == 2 and [p[0] for p in g.per_sparsity] == list(SP)
    assert g.mean > 0.2  # magnitude beats random by far on the demo CNN
    assert len(race.gaps()) == 3 * 3
    with pytest.raises(RaceError, match="not in the race"):
        race.gap_to_random("taylor")


def test_jaccard_from_masks(race, demo):
    same = race.jaccard("magnitude", "magnitude", 0.7, "global")
    assert same.overall == 1.0 and all(v == 1.0 for v in same.per_layer.values())
    # within one layer LAMP keeps the magnitude order: identical masks in layer scope
    assert race.jaccard("magnitude", "lamp", 0.7, "layer").overall == 1.0
    a = race.jaccard("magnitude", "lamp", 0.7, "global")
    model, _, calib = demo
    sm = PruningSession(model, criterion="magnitude", scope="global")
    sl = PruningSession(model, criterion=LAMP(), scope="global")
    inter = union = 0
    for s in (sm, sl):
        s.set_global_sparsity(0.7)
    for n in sm.names:
        pa, pb = ~sm.mask(n), ~sl.mask(n)
        i, u = int((pa & pb).sum()), int((pa | pb).sum())
        assert a.per_layer[n] == pytest.approx(i / u)
        inter, union = inter + i, union + u
    assert a.overall == pytest.approx(inter / union) and 0 < a.overall < 1
    for s in (sm, sl):
        s.reset()


def test_a_pickled_result_keeps_its_points_but_not_the_model(race):
    import pickle

    back = pickle.loads(pickle.dumps(race))
    assert back.rows == race.rows and back.to_csv() == race.to_csv()
    with pytest.raises(RaceError, match="no model"):
        back.jaccard("magnitude", "lamp", 0.7)


def test_csv_has_one_row_per_point(race, tmp_path):
    text = race.to_csv()
    lines = text.splitlines()
    assert len(lines) == 1 + len(race.rows)
    header = lines[0].split(",")
    assert header[:6] == ["model", "task", "criterion", "scope", "sparsity", "seed"]
    assert {"accuracy", "compression", "speedup", "flops_slim", "layer_sparsity"} <= set(header)
    path = race.to_csv(tmp_path / "r.csv")
    assert path.read_text() == text


def test_the_session_is_only_read_bit_for_bit(demo):
    model, data, calib = demo
    s = PruningSession(model, criterion="magnitude", scope="global", calib_data=calib)
    s.set_global_sparsity(0.6)
    s.set_sparsity("features.3.weight", 0.2)
    before = state_of(s)
    r = criterion_race(s, data, criteria=("magnitude", "taylor"), scopes=("global", "structured"), sparsities=(0.5,),
                       executor="inline")
    after = state_of(s)
    assert all(torch.equal(before[0][k], v) for k, v in after[0].items())
    assert before[1:] == after[1:]
    s.reset()  # (the session prunes `model` in place: back to the original weights for the fresh race)
    # the race measured the *dense* model (the session's originals), not the session's current plan
    fresh = criterion_race(model, data, criteria=("magnitude",), scopes=("global",), sparsities=(0.5,))
    assert r.points("magnitude", "global")[0].value == fresh.rows[0].value


def test_subset_resampling_draws_other_samples_per_seed(demo):
    model, data, _ = demo
    r = criterion_race(model, data, criteria=("magnitude",), scopes=("global",), sparsities=(0.8,), seeds=3,
                       evaluator_kwargs={"subset_size": 120})
    assert r.resampled and r.subset_size == 120
    assert len(set(r.baselines.values())) > 1 or len({p.value for p in r.rows}) > 1


def test_progress_and_cancel(demo):
    model, data, _ = demo
    stop = threading.Event()
    seen = []

    def progress(done, total, info):
        seen.append((done, total, info["criterion"]))
        stop.set()

    r = criterion_race(model, data, criteria=("magnitude", "random"), scopes=("global",), sparsities=(0.2, 0.4, 0.6),
                       progress=progress, cancel=stop)
    assert r.cancelled and len(r.rows) == 1
    assert seen[0][:2] == (1, 6)


def test_bad_input_is_refused_clearly(demo):
    model, data, calib = demo
    with pytest.raises(CriterionError, match="Did you mean: 'magnitude'"):
        criterion_race(model, data, criteria=("magnitdue",))
    with pytest.raises(InvalidSparsityError, match=r"\[0, 1\]"):
        criterion_race(model, data, criteria=("magnitude",), sparsities=(0.5, 1.5))
    with pytest.raises(RaceError, match="at least one seed"):
        criterion_race(model, data, criteria=("magnitude",), seeds=0)
    with pytest.raises(RaceError, match="Did you mean"):
        criterion_race(model, data, criteria=("magnitude",), scopes=("globl",))
    with pytest.raises(CriterionError, match="calibration data"):
        criterion_race(model, data, criteria=("wanda",))
    with pytest.raises(RaceError, match="executor"):
        criterion_race(model, data, criteria=("magnitude",), executor="dask")


@pytest.fixture(scope="module")
def small_inline(demo):
    model, data, calib = demo
    kw = {"criteria": ("magnitude", "random", "taylor"), "scopes": ("global", "structured"), "sparsities": SP,
          "seeds": 2, "calib_data": calib}
    return kw, criterion_race(model, data, executor="inline", **kw).to_csv()


@pytest.mark.slow
def test_process_pool_gives_the_same_csv(demo, small_inline):
    model, data, _ = demo
    kw, inline = small_inline
    assert criterion_race(model, data, workers=2, **kw).to_csv() == inline
