"""benchmarks/search_table.py: the learning-curve table (record) and the strategies replayed over it.

The table is checked against recomputations: every epoch's objective against the area under its own
operating points, and the kept epoch against early stopping's own judge_epoch. Recording is
resumable, and a space that is not a grid is refused in one line, exit 2, before anything is written.
`paired` is checked against the replay run again by hand, `limits` against early stopping's own
kept epoch and rung ranks sorted by hand."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.benchmarks.tiny import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from _table import dense_front, kept_epoch, read_table, stop_epoch  # noqa: E402
from ee_search.exits import hypervolume  # noqa: E402
from ee_search.train.early_stopping import StopState, judge_epoch  # noqa: E402

TINY_STUDY = ROOT / "benchmarks" / "studies" / "digits_grid_tiny.yaml"


def search_table(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_table.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> Path:
    """The tiny grid recorded in two goes: one configuration, then (resumed) the other three."""
    work = tmp_path_factory.mktemp("table")
    first = search_table("record", "--tiny", "--out", str(work / "table"), "--limit", "1", cwd=work)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 configurations recorded" in first.stdout
    rest = search_table("record", "--tiny", "--out", str(work / "table"), cwd=work)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert rest.stdout.count("config ") == 3  # resumed: the recorded configuration is not trained again
    return work / "table"


def test_record_covers_the_grid_epoch_by_epoch(tiny_table):
    table = read_table(tiny_table)
    assert table.meta["complete"] is True and table.meta["grid_size"] == 4
    assert sorted(c.index for c in table.curves) == [0, 1, 2, 3]
    assert {(c.values["train.lr"], c.values["train.averaging.method"]) for c in table.curves} == {
        (lr, m) for lr in (0.01, 0.1) for m in ("none", "ema")}
    for curve in table.curves:
        assert len(curve.epochs) == table.max_epochs == 3  # early stopping off while recording
        for row in curve.epochs:
            assert row.val_points.shape == row.test_points.shape and len(row.val_points) >= 1
            assert ((row.test_points[:, :2] > 0) & (row.test_points[:, :2] <= 1)).all()
            # The objective the trial returns is the area under these very points.
            points = [(a, d) for a, d, _ in row.val_points]
            assert row.objectives["curve_hypervolume"] == pytest.approx(hypervolume(points), abs=2e-6)
            assert set(row.metrics) >= {"val_loss", "val_curve_hypervolume", "val_accuracy_exit_1"}


@pytest.fixture(scope="module")
def trial_one_table(tmp_path_factory) -> Path:
    """The tiny grid's first configuration trained as live trial 1 would be (`--trial 1`)."""
    work = tmp_path_factory.mktemp("trial1")
    proc = search_table("record", "--tiny", "--out", str(work / "table"), "--limit", "1", "--trial", "1", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "table"


def test_record_trains_each_configuration_as_the_given_live_trial(tiny_table, trial_one_table, tmp_path):
    """`--trial N` trains as live trial N: training seed `seed + N` on the study seed's data split.
    Oracles: `--trial 0` is the table as recorded before; `--set seed=S+1` (same training seed,
    another split) differs from `--trial 1`, so --trial moved the training seed and not the split."""
    def first_curve(folder: str, *flags: str):
        proc = search_table("record", "--tiny", "--out", str(tmp_path / folder), "--limit", "1", *flags, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return read_table(tmp_path / folder).curves[0]

    recorded = read_table(tiny_table).curves[0]
    again = first_curve("trial0", "--trial", "0")
    later = read_table(trial_one_table).curves[0]
    seed = yaml.safe_load(TINY_STUDY.read_text())["seed"]
    reseeded = first_curve("seed", "--set", f"seed={seed + 1}")
    assert again.values == later.values == recorded.values
    assert again.monitor("val_loss") == recorded.monitor("val_loss")
    assert later.monitor("val_loss") != recorded.monitor("val_loss")
    assert later.monitor("val_loss") != reseeded.monitor("val_loss")
    assert json.loads((trial_one_table / "table.json").read_text())["trial"] == 1
    refused = search_table("record", "--tiny", "--out", str(trial_one_table), cwd=tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "another --trial" in lines[0]


def test_limits_put_a_retrained_configuration_beside_its_own_record(tiny_table, trial_one_table, tmp_path):
    """`limits --retrained`: per training seed, the configuration's own front (recomputed here from
    its kept epoch) and its monitor's rank at each rung against the table's other configurations."""
    out = tmp_path / "limits.json"
    proc = search_table("limits", str(tiny_table), "--retrained", str(trial_one_table), "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    table, later = read_table(tiny_table), read_table(trial_one_table).curves[0]
    [row] = result["retrained"]["configurations"]
    assert row["trials"] == [0, 1] and row["values"] == later.values
    own = next(c for c in result["configurations"] if c["index"] == row["index"])
    assert (row["val_hv"][0], row["test_hv"][0]) == (own["val_hv"], own["test_hv"])
    assert {e: ranks[0] for e, ranks in row["monitor_rank_at_rung"].items()} == own["monitor_rank_at_rung"]
    es = table.meta["early_stopping"]
    assert es["monitor"] == "val_curve_hypervolume"  # mode max: higher is better below
    kept = kept_epoch(later, stop_epoch(later, es["monitor"], "max", es["patience"], es["tol"]), es["monitor"], "max", es["tol"])
    front = dense_front([later.epochs[kept - 1]])
    assert row["val_hv"][1] == round(front.val_hypervolume, 6) and row["test_hv"][1] == round(front.test_hypervolume, 6)
    for epoch, ranks in row["monitor_rank_at_rung"].items():
        mine = max(later.monitor(es["monitor"])[:int(epoch)])
        others = [max(c.monitor(es["monitor"])[:int(epoch)]) for c in table.curves if c.values != later.values]
        assert ranks[1] == sum(v > mine for v in others)
    assert result["retrained"]["val_hv_range"]["max"] == row["val_hv_range"] == round(abs(row["val_hv"][1] - row["val_hv"][0]), 6)


def test_kept_epoch_is_early_stoppings_best(tiny_table):
    table = read_table(tiny_table)
    for curve in table.curves:
        for tol in (0.0, 0.01, 0.5):
            for stopped in range(1, len(curve.epochs) + 1):
                state = StopState()
                for epoch, value in enumerate(curve.monitor("val_loss")[:stopped], start=1):
                    state = judge_epoch(state, value, epoch, mode="min", patience=99, tol=tol).state
                assert kept_epoch(curve, stopped, "val_loss", "min", tol) == state.best_epoch


def test_dense_front_of_more_trials_is_no_worse_on_val(tiny_table):
    table = read_table(tiny_table)
    rows = [c.epochs[-1] for c in table.curves]
    fronts = [dense_front(rows[:n]) for n in range(1, len(rows) + 1)]
    assert all(a.val_hypervolume <= b.val_hypervolume + 1e-12 for a, b in zip(fronts, fronts[1:]))
    best_own = max(hypervolume([(a, d) for a, d, _ in r.val_points]) for r in rows)
    assert fronts[-1].val_hypervolume >= best_own - 1e-12


def test_record_refuses_a_space_that_is_not_a_grid(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TINY_STUDY.read_text().replace(
        "train.lr: {type: categorical, choices: [0.01, 0.1]}", "train.lr: {type: float, low: 0.01, high: 0.1}"))
    proc = search_table("record", str(study), "--out", str(tmp_path / "t"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.space.train.lr" in lines[0] and "categorical" in lines[0]
    assert not (tmp_path / "t").exists()


def recomputed_curve(table, trials: list[list[int]]) -> list[list[float]]:
    """A run's curve rebuilt from its trials alone: the epochs summed, the dense front of the kept epochs."""
    by_index = {c.index: c for c in table.curves}
    spent, kept, curve = 0, [], []
    for index, epochs, kept_at in trials:
        spent += epochs
        if kept_at:
            kept.append(by_index[index].epochs[kept_at - 1])
        front = dense_front(kept)
        curve.append([spent, round(front.test_hypervolume, 6), round(front.val_hypervolume, 6)])
    return curve


@pytest.mark.parametrize("strategy", ["ee-search", "random_full", "random_es", "tpe_hyperband", "asha"])
def test_replayed_runs_keep_their_books(tiny_table, strategy):
    from _table_replay import run_optuna

    table = read_table(tiny_table)
    budget = 6 * table.max_epochs
    run = run_optuna(table, strategy, seed=1, budget_epochs=budget)
    assert run.curve == recomputed_curve(table, run.trials)
    assert all(point[0] < budget for point in run.curve[:-1])
    if run.curve[-1][0] < budget:  # stopped early: only once the sampler proposed nothing new, grid-size times
        assert [epochs for _, epochs, _ in run.trials[-len(table.curves):]] == [0] * len(table.curves)
    assert run_optuna(table, strategy, seed=1, budget_epochs=budget).trials == run.trials  # deterministic
    by_index = {c.index: c for c in table.curves}
    es = table.meta["early_stopping"]
    for number, (index, epochs, kept_at) in enumerate(run.trials):
        curve = by_index[index]
        if epochs == 0:  # a duplicate (search.skip_duplicates): the same configuration ran before
            assert index in [i for i, e, _ in run.trials[:number] if e > 0]
            continue
        if strategy == "random_full":  # no early stopping, no pruning: every trial trains to the end
            assert epochs == table.max_epochs
        if strategy == "random_es":  # early stopping alone: it stops where judge_epoch says
            assert epochs == stop_epoch(curve, es["monitor"], "max", es["patience"], es["tol"])
        if kept_at:  # a completed trial keeps early stopping's best epoch up to where it stopped
            assert kept_at == kept_epoch(curve, epochs, es["monitor"], "max", es["tol"])


def test_replay_writes_the_record_and_the_figure(tiny_table, tmp_path):
    out = tmp_path / "replay.json"
    proc = search_table("replay", str(tiny_table), "--seeds", "2", "--budget-trials", "4", "--json", str(out),
                        "--strategies", "ee-search", "random_full", "asha", "--never-prune", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    record = json.loads(out.read_text())
    assert record["seeds"] == 2 and record["budget_epochs"] == 4 * 3
    assert set(record["strategies"]) == {"ee-search", "random_full", "asha"}
    assert record["ee_search_oracle_never_prunes"] == [1]
    table = read_table(tiny_table)
    es = table.meta["early_stopping"]
    oracle_stop = stop_epoch(table.curves[[c.index for c in table.curves].index(1)], es["monitor"], "max",
                             es["patience"], es["tol"])
    for run in record["strategies"]["ee-search"]["runs"]:  # the oracle's configuration: early stopping alone ends it
        assert all(epochs in (0, oracle_stop) for index, epochs, _ in run["trials"] if index == 1)
    budget = record["budget_epochs"]
    for name, strategy in record["strategies"].items():
        # At 100 % a run is judged on what it had found within the budget: a last trial that overshot
        # it does not count, so every strategy is compared at equal compute.
        finals = [[p[1] for p in r["curve"] if p[0] <= budget][-1] for r in strategy["runs"]]
        assert strategy["summary"]["test_hv"]["100%"]["median"] == pytest.approx(sum(finals) / 2)
    target = record["summary"]["random_full_median_final_test_hv"]
    assert target == pytest.approx(record["strategies"]["random_full"]["summary"]["test_hv"]["100%"]["median"])
    assert (tmp_path / "replay.png").stat().st_size > 10_000


def test_each_pair_is_the_replay_with_and_without_the_pruner(tiny_table, tmp_path):
    from _table import read_table
    from _table_replay import run_optuna

    out = tmp_path / "paired.json"
    proc = search_table("paired", str(tiny_table), "--trials", "3", "--seeds", "2", "--json", str(out),
                        "--variant", "eager", "search.pruner.n_warmup_epochs=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["trials"] == 3 and set(record["variants"]) == {"ee-search", "eager"}
    assert (tmp_path / "paired.png").stat().st_size > 10_000  # two settings: the trade-off figure
    table = read_table(tiny_table)
    es = table.meta["early_stopping"]
    for variant in record["variants"].values():
        sets = tuple(variant["sets"])
        for pair in variant["pairs"]:
            pruned = run_optuna(table, "ee-search", pair["seed"], 10**9, sets, n_trials=3)
            unpruned = run_optuna(table, "ee-search", pair["seed"], 10**9, (*sets, "search.pruner.type=none"), n_trials=3)
            assert len(pruned.trials) == len(unpruned.trials) == 3
            assert pair["pruned"] == {"epochs": pruned.epochs, "test_hv": pruned.curve[-1][1], "val_hv": pruned.curve[-1][2]}
            assert pair["unpruned"]["epochs"] == unpruned.epochs and pair["unpruned"]["test_hv"] == unpruned.curve[-1][1]
            within = [point[1] for point in unpruned.curve if point[0] <= pruned.epochs]  # equal compute
            assert pair["unpruned"]["test_hv_at_pruned_epochs"] == (within[-1] if within else 0.0)
            by_index = {c.index: c for c in table.curves}
            for index, epochs, _ in unpruned.trials:  # no pruner: early stopping alone ends each trial
                assert epochs in (0, stop_epoch(by_index[index], es["monitor"], "max", es["patience"], es["tol"]))
        pairs = variant["pairs"]
        saved = 1 - sum(p["pruned"]["epochs"] for p in pairs) / sum(p["unpruned"]["epochs"] for p in pairs)
        ratios = [p["pruned"]["test_hv"] / p["unpruned"]["test_hv"] for p in pairs]
        summary = variant["summary"]
        assert summary["epochs_saved"] == pytest.approx(saved, abs=1e-4)
        assert summary["test_hv_ratio"]["median"] == pytest.approx(statistics.median(ratios), abs=1e-4)
        of_means = statistics.mean(p["pruned"]["test_hv"] for p in pairs) / statistics.mean(p["unpruned"]["test_hv"] for p in pairs)
        assert summary["test_hv_ratio"]["of_means"] == pytest.approx(of_means, abs=1e-4)
        assert summary["goal"]["holds"] == (saved >= 0.5 and of_means >= 0.99)


def test_limits_recompute_the_grid_front_and_the_rung_ranks(tiny_table, tmp_path):
    from _table import dense_front, kept_epoch, read_table

    out = tmp_path / "limits.json"
    proc = search_table("limits", str(tiny_table), "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    table = read_table(tiny_table)
    es = table.meta["early_stopping"]
    kept = {}
    for curve in table.curves:
        stopped = stop_epoch(curve, es["monitor"], "max", es["patience"], es["tol"])
        kept[curve.index] = curve.epochs[kept_epoch(curve, stopped, es["monitor"], "max", es["tol"]) - 1]
    grid = dense_front(list(kept.values()))
    assert record["grid_front"]["val_hv"] == pytest.approx(grid.val_hypervolume, abs=1e-6)
    assert record["grid_front"]["test_hv"] == pytest.approx(grid.test_hypervolume, abs=1e-6)
    # The tiny study's pruner: warm-up 1, no rung factor, so every epoch from 2 on is a rung.
    assert record["rungs"] == list(range(2, table.max_epochs + 1))
    for epoch in record["rungs"]:
        best = {c.index: max(c.monitor(es["monitor"])[:epoch]) for c in table.curves}
        for config in record["configurations"]:
            expected = sum(v > best[config["index"]] for v in best.values())
            assert config["monitor_rank_at_rung"][str(epoch)] == expected
    for config in record["configurations"]:
        own = dense_front([kept[config["index"]]])
        assert config["val_hv"] == pytest.approx(own.val_hypervolume, abs=1e-6)
        assert config["test_hv"] == pytest.approx(own.test_hypervolume, abs=1e-6)
    vals = [c["val_hv"] for c in record["best_by_val"]]
    assert vals == sorted(vals, reverse=True) and grid.val_hypervolume >= vals[0] - 1e-6
    assert (tmp_path / "limits.png").stat().st_size > 10_000  # the curves figure


def test_never_pruning_every_configuration_is_the_unpruned_study(tiny_table):
    from _table import read_table
    from _table_replay import run_optuna

    table = read_table(tiny_table)
    # A pruner that stops whatever is not the best so far, from the first epoch on: it prunes here.
    eager = ("search.pruner.n_warmup_epochs=0", "search.pruner.n_startup_trials=0",
             "search.pruner.min_stale_epochs=0", "search.pruner.percentile=0")
    everything = frozenset(c.index for c in table.curves)
    for seed in (1, 2):
        pruned = run_optuna(table, "ee-search", seed, 10**9, eager, n_trials=4)
        oracle = run_optuna(table, "ee-search", seed, 10**9, eager, n_trials=4, never_prune=everything)
        unpruned = run_optuna(table, "ee-search", seed, 10**9, (*eager, "search.pruner.type=none"), n_trials=4)
        assert pruned.trials != unpruned.trials  # the pruner acts, so the oracle has something to undo
        assert oracle.trials == unpruned.trials and oracle.curve == unpruned.curve


def test_replay_and_paired_refuse_an_unfinished_table_in_one_line(tmp_path):
    partial = tmp_path / "partial"
    recorded = search_table("record", "--tiny", "--out", str(partial), "--limit", "1", cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    for command in (["replay", str(partial), "--seeds", "1", "--json", str(tmp_path / "r.json")],
                    ["paired", str(partial), "--seeds", "1", "--json", str(tmp_path / "p.json")]):
        proc = search_table(*command, cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "holds 1 of the grid's 4 configurations" in lines[0] and "record first" in lines[0]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("look_ahead", [None, 1])
def test_foresight_ranks_every_trial_by_what_it_will_reach(tiny_table, look_ahead):
    from _table import read_table
    from _table_replay import run_optuna

    table = read_table(tiny_table)
    monitors = {c.index: c.monitor("val_curve_hypervolume") for c in table.curves}

    def seen(index: int, epoch: int) -> float:
        # Early stopping (patience 2) cannot end a 3-epoch curve before its last epoch, so the oracle
        # sees the best up to epoch + look_ahead, or of the whole curve.
        return max(monitors[index][:3 if look_ahead is None else epoch + look_ahead])

    eager = ("search.pruner.n_warmup_epochs=0", "search.pruner.n_startup_trials=0",
             "search.pruner.min_stale_epochs=0", "search.pruner.percentile=0")  # prune what is not the best
    differs = 0
    for seed in range(1, 7):
        oracle = run_optuna(table, "ee-search", seed, 10**9, eager, n_trials=6, foresight=True, look_ahead=look_ahead)
        # By hand: at epochs 1 and 2 (epoch 3 is the last, never pruned) a trial stops if what the oracle
        # sees of it is below the best it saw of the trials that reached that epoch before it.
        trained: list[tuple[int, int]] = []  # (configuration, epochs it trained)
        for index, epochs, _kept in oracle.trials:
            if epochs == 0:  # a duplicate, pruned untrained
                assert index in [i for i, _ in trained]
                continue
            expected = table.max_epochs
            for epoch in (1, 2):
                reached = [max(seen(i, e) for e in range(1, min(epoch, stopped) + 1)) for i, stopped in trained
                           if stopped >= epoch]
                if reached and seen(index, epoch) < max(reached):
                    expected = epoch
                    break
            assert epochs == expected, (seed, oracle.trials)
            trained.append((index, epochs))
        plain = run_optuna(table, "ee-search", seed, 10**9, eager, n_trials=6)
        differs += plain.trials != oracle.trials
        # Seeing 0 epochs ahead is seeing the best so far: the oracle is the pruner as it is (tol 0 here).
        assert run_optuna(table, "ee-search", seed, 10**9, eager, n_trials=6, foresight=True, look_ahead=0).trials == plain.trials
    if look_ahead is None:  # configuration 1 trails 0 at epochs 1-2 and ends above it: foresight changes decisions
        assert differs


def test_foresight_flag_reaches_the_default_strategy_only(tiny_table, tmp_path):
    from _table import read_table
    from _table_replay import run_optuna

    table = read_table(tiny_table)
    eager = ("search.pruner.n_warmup_epochs=0", "search.pruner.n_startup_trials=0",
             "search.pruner.min_stale_epochs=0", "search.pruner.percentile=0")
    ee_sets = [arg for s in eager for arg in ("--ee-set", s)]
    replayed = search_table("replay", str(tiny_table), "--seeds", "3", "--budget-trials", "4", "--foresight", *ee_sets,
                            "--strategies", "ee-search", "asha", "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    paired = search_table("paired", str(tiny_table), "--trials", "3", "--seeds", "3", "--foresight",
                          "--variant", "eager", *eager, "--json", str(tmp_path / "p.json"), cwd=tmp_path)
    assert replayed.returncode == 0 and paired.returncode == 0, replayed.stderr[-2000:] + paired.stderr[-2000:]
    replay, pairs = json.loads((tmp_path / "r.json").read_text()), json.loads((tmp_path / "p.json").read_text())
    assert replay["ee_search_oracle_foresight"] is True and pairs["oracle_foresight"] is True
    changed = 0
    for run in replay["strategies"]["ee-search"]["runs"]:
        assert run["trials"] == run_optuna(table, "ee-search", run["seed"], 12, eager, foresight=True).trials
        changed += run["trials"] != run_optuna(table, "ee-search", run["seed"], 12, eager).trials
    assert changed  # the oracle changes a decision here, so a flag that did not reach it would fail
    for run in replay["strategies"]["asha"]["runs"]:  # the oracle is the default's, as --never-prune is
        assert run["trials"] == run_optuna(table, "asha", run["seed"], 12).trials
    # paired replays each setting twice, as it is and with foresight, and draws both
    assert set(pairs["variants"]) == {"ee-search", "ee-search + foresight", "eager", "eager + foresight"}
    for name, oracle in (("eager", False), ("eager + foresight", True)):
        assert pairs["variants"][name]["foresight"] is oracle
        for pair in pairs["variants"][name]["pairs"]:
            run = run_optuna(table, "ee-search", pair["seed"], 10**9, eager, n_trials=3, foresight=oracle)
            assert pair["pruned"]["epochs"] == run.epochs and pair["pruned"]["test_hv"] == run.curve[-1][1]
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_median_gap_interval_is_scipys_percentile_bootstrap():
    import numpy as np
    from _table_report import median_gap_interval
    from scipy import stats

    assert median_gap_interval([0.5] * 30, [0.4] * 30) == pytest.approx([0.1, 0.1])  # no spread, no doubt
    rng = np.random.default_rng(5)
    own, other = rng.normal(0.55, 0.01, 30), rng.normal(0.54, 0.02, 30)
    ours = median_gap_interval(list(own), list(other), resamples=20000)
    kwargs = {"rng" if "rng" in stats.bootstrap.__code__.co_varnames else "random_state": np.random.default_rng(1)}
    theirs = stats.bootstrap((own, other), lambda a, b, axis: np.median(a, axis=axis) - np.median(b, axis=axis),
                             vectorized=True, n_resamples=20000, method="percentile", **kwargs).confidence_interval
    assert ours == pytest.approx([theirs.low, theirs.high], abs=0.0015)  # Monte Carlo error of 20000 resamples


def test_the_quick_start_table_replays_the_shipped_default():
    """The replay's `ee-search` strategy is the study file the table was recorded from; for the
    committed quick-start table that must be the quick start itself, on a grid: the same training
    (warm-up included), sampler, pruner and objectives, only the space made categorical."""
    from ee_search.config import load_config

    shipped, _ = load_config(ROOT / "studies" / "quickstart.yaml")
    table = ROOT / "benchmarks" / "tables" / "quickstart-warmup"
    recorded, _ = load_config(table / "study.yaml")
    meta = json.loads((table / "table.json").read_text())
    assert meta["overrides"] == [] and meta["complete"] and meta["grid_size"] == 72
    assert (table / "study.yaml").read_text() == (ROOT / "benchmarks" / "studies" / "quickstart_grid.yaml").read_text()
    assert recorded.train == shipped.train and recorded.model == shipped.model and recorded.exits == shipped.exits
    same = ("n_trials", "objectives", "sampler", "pruner")
    assert {k: getattr(recorded.search, k) for k in same} == {k: getattr(shipped.search, k) for k in same}
    assert set(recorded.search.space) == set(shipped.search.space)
    assert recorded.data == shipped.data
