"""benchmarks/_table_syne_tune.py: Syne Tune's own ASHA and MOASHA replayed over a learning-curve table.

The oracles: with a grace period of max_t (Syne Tune's schedulers then never stop a trial) the run's
dense front is `dense_front` of the sampled curves' kept epochs computed here; with Syne Tune's defaults a
trial ends only at one of ASHA's rungs (1, 3, 9, ... epochs) or at max_epochs, only completed trials move
the front, and the points' epochs add up trial by trial within the budget. Most tables here are
synthetic (the real grid of a study file, random curves written with the real `write_curve`), so that a
conditional dimension, a diverged curve and the benchmark's size are checked in seconds; one test runs
over a table recorded by `search_table.py record --tiny`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.test_search_table import search_table
from tests.benchmarks.tiny import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from _table import META_FILE, STUDY_FILE, dense_front, describe, grid, kept_epoch, read_table, write_curve  # noqa: E402
from _table_syne_tune import grid_space, run_syne_tune  # noqa: E402
from ee_search.config import load_study_file  # noqa: E402

# 6 learning rates x (none, or ema at 2 decays) x 4 batch sizes = 72 configurations: the benchmark's size.
GRID_STUDY = """\
name: synthetic_grid
data: {dataset: digits}
model: {name: ee_vgg}
train:
  max_epochs: MAX_EPOCHS
  early_stopping: {monitor: val_curve_hypervolume, patience: 3, tol: 0.001}
search:
  objectives: [curve_hypervolume]
  space:
    train.lr: {type: categorical, choices: [0.003, 0.01, 0.03, 0.1, 0.2, 0.3]}
    train.averaging.method: {type: categorical, choices: [none, ema]}
    train.averaging.decay: {type: categorical, choices: [0.9, 0.99], when: {train.averaging.method: [ema]}}
    train.batch_size: {type: categorical, choices: [32, 64, 128, 256]}
"""


def synthetic_table(folder: Path, max_epochs: int, seed: int = 0, diverged: int | None = None) -> Path:
    """The grid of GRID_STUDY with random rising curves; configuration `diverged` stops after 2 epochs."""
    folder.mkdir(parents=True)
    (folder / STUDY_FILE).write_text(GRID_STUDY.replace("MAX_EPOCHS", str(max_epochs)))
    loaded = load_study_file(folder / STUDY_FILE, [])
    configurations = grid(loaded)
    meta = {"format": 1, "overrides": [], "grid_size": len(configurations), **describe(loaded.config)}
    (folder / META_FILE).write_text(json.dumps(meta))
    rng = np.random.default_rng(seed)
    for index, values in enumerate(configurations):
        n_epochs = 2 if index == diverged else max_epochs
        quality = rng.uniform(0.2, 0.9)
        epochs = [_epoch(rng, quality * (1 - 0.5 ** e)) for e in range(1, n_epochs + 1)]
        write_curve(folder, index, values, epochs, "diverged" if index == diverged else "max_epochs")
    return folder


def _epoch(rng: np.random.Generator, level: float) -> dict:
    accuracy = np.sort(rng.uniform(0.5 * level, level, 4))
    depth = np.sort(rng.uniform(0.3, 1.0, 4))
    val = [[float(a), float(d), float(d), [0.9]] for a, d in zip(accuracy, depth)]
    test = [[float(a) - 0.01, float(d), float(d)] for a, d in zip(accuracy, depth)]
    metrics = {"val_curve_hypervolume": float(level + rng.normal(0, 0.02)), "val_accuracy": float(accuracy[-1]),
               "val_avg_exit_depth": float(depth[-1]), "epoch_seconds": float(rng.uniform(2, 4))}
    return {"metrics": metrics, "objectives": {}, "val_points": val, "test_points": test}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return read_table(synthetic_table(tmp_path_factory.mktemp("syne") / "table", max_epochs=9))


def kept_rows(table, curves):
    es = table.meta["early_stopping"]
    return [c.epochs[kept_epoch(c, table.max_epochs, es["monitor"], "max", es["tol"]) - 1] for c in curves]


def test_the_space_drops_a_dimension_whose_condition_fails(table):
    space = grid_space(table)
    assert set(space.config_space()) == {"train.lr", "train.averaging.method", "train.averaging.decay", "train.batch_size"}
    sampled = {"train.lr": "0.1", "train.averaging.method": '"none"', "train.averaging.decay": "0.99",
               "train.batch_size": "64"}
    assert space.values(sampled) == {"train.lr": 0.1, "train.averaging.method": "none", "train.batch_size": 64}
    ema = space.values({**sampled, "train.averaging.method": '"ema"'})
    assert ema["train.averaging.decay"] == 0.99
    assert len(table.curves) == 72  # every sampled combination maps to one of these (run_syne_tune checks)


@pytest.mark.parametrize("strategy", ["asha", "moasha"])
def test_a_scheduler_that_never_stops_fronts_every_sampled_curve(tmp_path, strategy):
    """grace_period = max_t: the scheduler never stops a trial, so every trial completes and joins
    the front; 400 trials sample every one of the 72 configurations (72 * (71/72)**400 < 0.03% to
    miss one), so the run's final front is `dense_front` of every curve's kept epoch."""
    small = read_table(synthetic_table(tmp_path / "t", max_epochs=4, seed=5))
    budget = 4 * 400
    curve = run_syne_tune(small, strategy, seed=1, budget_epochs=budget, scheduler_options={"grace_period": 4})
    assert [p[0] for p in curve] == list(range(4, budget + 1, 4))  # every trial completes, one after the other
    everything = dense_front(kept_rows(small, small.curves))
    assert curve[-1][1:] == pytest.approx([everything.test_hypervolume, everything.val_hypervolume])
    assert all(b[2] >= a[2] for a, b in zip(curve, curve[1:]))  # the val front only grows


@pytest.mark.parametrize("strategy", ["asha", "moasha"])
def test_defaults_stop_at_rungs_and_respect_the_budget(table, strategy):
    budget = 120
    curve = run_syne_tune(table, strategy, seed=3, budget_epochs=budget)
    epochs = [p[0] for p in curve]
    spent = np.diff([0, *epochs])
    # Syne Tune's defaults: grace period 1, reduction factor 3: rungs at 1 and 3 epochs, then max_t 9.
    assert set(spent) <= {1, 3, 9} and 9 in spent and (spent < 9).any()
    assert budget - table.max_epochs < epochs[-1] <= budget
    # A trial stopped by the scheduler adds nothing to the front: the point repeats the one before.
    for i in np.flatnonzero(spent < 9):
        assert curve[i][1:] == (curve[i - 1][1:] if i > 0 else [0.0, 0.0])
    assert all(b[2] >= a[2] for a, b in zip(curve, curve[1:]))  # the val front only grows


def test_same_seed_same_curve_other_seeds_differ(table):
    first = run_syne_tune(table, "asha", seed=7, budget_epochs=60)
    assert run_syne_tune(table, "asha", seed=7, budget_epochs=60) == first
    others = [run_syne_tune(table, "asha", seed=s, budget_epochs=60) for s in (8, 9, 10)]
    assert any(o != first for o in others)


def test_a_diverged_curve_ends_its_trial_and_adds_nothing(tmp_path):
    """Configuration 0 (lr 0.003, no averaging, batch 32) diverged after 2 of 3 epochs."""
    small = read_table(synthetic_table(tmp_path / "t", max_epochs=3, seed=2, diverged=0))
    curve = run_syne_tune(small, "asha", seed=4, budget_epochs=3 * 400, scheduler_options={"grace_period": 3})
    spent = set(np.diff([0, *[p[0] for p in curve]]))
    assert spent == {2, 3}  # the diverged trial ends at its last recorded epoch
    healthy = dense_front(kept_rows(small, [c for c in small.curves if c.index != 0]))
    assert curve[-1][1:] == pytest.approx([healthy.test_hypervolume, healthy.val_hypervolume])


def test_benchmark_size_run_is_fast_quiet_and_leaves_no_files(tmp_path, monkeypatch, capsys):
    big = read_table(synthetic_table(tmp_path / "big", max_epochs=15, seed=1))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    started = time.perf_counter()
    for strategy in ("asha", "moasha"):
        curve = run_syne_tune(big, strategy, seed=0, budget_epochs=360)
        assert 360 - 15 < curve[-1][0] <= 360
    assert time.perf_counter() - started < 60  # 60 such runs make the benchmark's Syne Tune part
    assert list(work.iterdir()) == []
    assert capsys.readouterr().out == ""


def test_an_unknown_strategy_is_refused(table):
    with pytest.raises(ValueError, match="strategy must be one of"):
        run_syne_tune(table, "hyperband", seed=0, budget_epochs=10)


@pytest.fixture(scope="module")
def tiny_recorded(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("recorded")
    done = search_table("record", "--tiny", "--out", str(work / "table"), cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "table"


def test_a_recorded_table_replays_with_both_schedulers(tiny_recorded):
    table = read_table(tiny_recorded)
    never_stopping = run_syne_tune(table, "asha", seed=0, budget_epochs=90, scheduler_options={"grace_period": 3})
    everything = dense_front(kept_rows(table, table.curves))
    assert never_stopping[-1][1:] == pytest.approx([everything.test_hypervolume, everything.val_hypervolume])
    moasha = run_syne_tune(table, "moasha", seed=0, budget_epochs=30)
    assert 27 < moasha[-1][0] <= 30 and moasha[0][0] == 3  # the first trial is never stopped: its rungs are empty
