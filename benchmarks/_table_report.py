"""`search_table.py replay`: run every strategy over the table at every seed, then summarise the runs
(median and interquartile range at fixed fractions of the budget, the epochs each strategy needs to
reach random_full's final HV), check the goals of the default, and draw the anytime figure.

Seeds are alternated across strategies (strategy A seed 0, B seed 0, A seed 1, ...) only for the
progress print; the runs are deterministic, so the order changes no figure.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from _table import read_complete_table
from _table_replay import STRATEGIES, describe_overrides, epochs_to_reach, run_optuna, value_at

SYNE_TUNE = ("moasha", "syne_asha")  # Syne Tune's own schedulers, through its simulator backend
ALL_STRATEGIES = (*STRATEGIES, *SYNE_TUNE)
FRACTIONS = (0.25, 0.5, 1.0)
DEFAULT = "ee-search"
BASELINE = "random_full"


def run_strategy(table, strategy: str, seed: int, budget: int, extra: tuple[str, ...],
                 never_prune: frozenset[int] = frozenset(), foresight: bool = False,
                 look_ahead: int | None = None) -> dict[str, Any]:
    """One run's record: its seed, its curve, and (Optuna's side) its trials."""
    if strategy in SYNE_TUNE:
        from _table_syne_tune import run_syne_tune  # syne-tune is an extra: imported only when asked for

        return {"seed": seed, "curve": run_syne_tune(table, strategy.removeprefix("syne_"), seed, budget)}
    default = strategy == DEFAULT  # --ee-set variants and the oracles (--never-prune, --foresight) are the default's
    run = run_optuna(table, strategy, seed, budget, extra if default else (),
                     never_prune=never_prune if default else frozenset(), foresight=foresight and default,
                     look_ahead=look_ahead)
    return {"seed": seed, "curve": run.curve, "trials": run.trials}


def quartiles(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) * 2 <= len(values):  # half the runs or more never got there: the median is infinite
        return {"median": math.inf, "q25": math.inf, "q75": math.inf}
    # Interpolating towards an infinite value gives NaN: a stand-in far past any budget, mapped back.
    never = 1e18
    stand_ins = np.where(np.isfinite(values), np.asarray(values, dtype=np.float64), never)
    q25, q50, q75 = (math.inf if q >= never / 2 else float(q) for q in np.percentile(stand_ins, [25, 50, 75]))
    return {"median": q50, "q25": q25, "q75": q75}


def summarise(runs: dict[str, list[dict]], budget: int) -> dict[str, Any]:
    """Per strategy: dense test HV at each budget fraction (median, IQR), the epochs to reach
    random_full's median final test HV, and trials run."""
    target = statistics.median(value_at(r["curve"], budget) for r in runs[BASELINE]) if BASELINE in runs else None
    out = {"random_full_median_final_test_hv": target, "strategies": {}}
    for name, strategy_runs in runs.items():
        at = {f"{int(f * 100)}%": quartiles([value_at(r["curve"], f * budget) for r in strategy_runs]) for f in FRACTIONS}
        at_val = {f"{int(f * 100)}%": quartiles([value_at(r["curve"], f * budget, 2) for r in strategy_runs])
                  for f in FRACTIONS}
        reach = quartiles([epochs_to_reach(r["curve"], target) for r in strategy_runs]) if target is not None else None
        out["strategies"][name] = {
            "test_hv": at, "val_hv": at_val, "epochs_to_random_full_final": reach,
            "trials": quartiles([len(r["curve"]) for r in strategy_runs]),
        }
    return out


def median_gap_interval(own: list[float], other: list[float], resamples: int = 4000, seed: int = 0) -> list[float]:
    """The 95 % percentile-bootstrap interval of median(own) - median(other), each strategy's seeds
    resampled on their own. Written with numpy because scipy.stats.bootstrap's seed keyword differs
    between the scipy versions pyproject allows (random_state before 1.15, rng since)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(own, dtype=np.float64), np.asarray(other, dtype=np.float64)
    gaps = (np.median(a[rng.integers(0, len(a), (resamples, len(a)))], axis=1)
            - np.median(b[rng.integers(0, len(b), (resamples, len(b)))], axis=1))
    low, high = np.percentile(gaps, [2.5, 97.5])
    return [float(low), float(high)]


def goals(summary: dict[str, Any], budget: int, runs: dict[str, list[dict]]) -> dict[str, Any]:
    """The issue's two goals for the default: random_full's final HV within a quarter of the budget
    (median over seeds), and at 25/50/100 % a median test HV no lower than any other strategy's,
    with the bootstrap interval of the gap to the best other: a gap whose interval spans 0 is not
    resolved by these seeds, whichever side of 0 the medians fall."""
    rows = summary["strategies"]
    if DEFAULT not in rows or BASELINE not in rows:
        return {}
    reach = rows[DEFAULT]["epochs_to_random_full_final"]["median"]
    at_least = {}
    for fraction in rows[DEFAULT]["test_hv"]:
        own = rows[DEFAULT]["test_hv"][fraction]["median"]
        best_name = max((n for n in rows if n != DEFAULT), key=lambda n: rows[n]["test_hv"][fraction]["median"])
        best_other = rows[best_name]["test_hv"][fraction]["median"]
        spent = float(fraction.rstrip("%")) / 100 * budget
        interval = median_gap_interval([value_at(r["curve"], spent) for r in runs[DEFAULT]],
                                       [value_at(r["curve"], spent) for r in runs[best_name]])
        at_least[fraction] = {"ee-search": own, "best_other": best_other, "best_other_strategy": best_name,
                              "holds": own >= best_other - 1e-12, "gap": own - best_other, "gap_ci95": interval,
                              "resolved": interval[0] > 0 or interval[1] < 0}
    return {"reach_random_full_final_within_quarter": {"epochs": reach, "quarter": budget / 4,
                                                       "holds": reach <= budget / 4,
                                                       "fraction_of_random_full_budget": reach / budget},
            "median_at_least_every_other": at_least}


def draw(result: dict[str, Any], path: Path) -> None:
    """Median dense test HV against epochs, one line per strategy, interquartile range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = result["budget_epochs"]
    grid = np.arange(0, budget + 1)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, strategy in result["strategies"].items():
        values = np.array([[value_at(r["curve"], e) for e in grid] for r in strategy["runs"]])
        q25, q50, q75 = np.percentile(values, [25, 50, 75], axis=0)
        line, = ax.step(grid, q50, where="post", label=name, linewidth=2.2 if name == DEFAULT else 1.3)
        ax.fill_between(grid, q25, q75, step="post", alpha=0.15, color=line.get_color())
    target = result["summary"].get("random_full_median_final_test_hv")
    if target:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label="random_full, final (median)")
    for f in FRACTIONS:
        ax.axvline(f * budget, color="lightgrey", linewidth=0.8)
    lows = [s["summary"]["test_hv"]["25%"]["q25"] for s in result["strategies"].values()
            if math.isfinite(s["summary"]["test_hv"]["25%"]["q25"])]
    ax.set_ylim(bottom=max(0.0, min(lows, default=0.0) - 0.02))
    ax.set(xlabel="epochs trained (all trials)", ylabel="dense front test hypervolume",
           title=f"{result['study']}: {result['seeds']} seeds, median and IQR")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def replay_main(args) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = read_complete_table(args.table)
    budget = args.budget_trials * table.max_epochs
    strategies = args.strategies or list(ALL_STRATEGIES)
    extra = tuple(getattr(args, "ee_set", None) or ())
    never_prune = frozenset(getattr(args, "never_prune", None) or ())
    foresight, look_ahead = getattr(args, "foresight", False), getattr(args, "look_ahead", None)
    runs: dict[str, list[dict]] = {name: [] for name in strategies}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for name in strategies:
            runs[name].append(run_strategy(table, name, seed, budget, extra, never_prune, foresight, look_ahead))
        print(f"seed {seed + 1}/{args.seeds} done ({time.perf_counter() - started:.0f} s)", flush=True)
    summary = summarise(runs, budget)
    result = {
        "benchmark": "search_table", "table": str(args.table), "study": table.meta.get("study"),
        "configurations": len(table.curves), "max_epochs": table.max_epochs, "seeds": args.seeds,
        "budget_epochs": budget, "budget_trials": args.budget_trials,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "strategy_overrides": describe_overrides(table), "ee_search_extra_overrides": list(extra),
        "ee_search_oracle_never_prunes": sorted(never_prune), "ee_search_oracle_foresight": foresight,
        "ee_search_oracle_look_ahead": look_ahead if foresight else None,
        "reference_point": {"accuracy": 0.0, "avg_exit_depth": 1.0},
        "front": "dense, chosen on val from the completed trials' kept epochs; test HV of those points",
        "strategies": {name: {"runs": runs[name], "summary": summary["strategies"][name]} for name in strategies},
        "summary": summary, "goals": goals(summary, budget, runs),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_finite(result), indent=1) + "\n")
    figure = args.figure or args.json.with_suffix(".png")
    draw(result, figure)
    _print(summary, result["goals"], figure)
    return 0


def _finite(value):
    """JSON has no infinity: a run that never reached a target is null there."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _print(summary: dict[str, Any], goal: dict[str, Any], figure: Path) -> None:
    for name, row in summary["strategies"].items():
        hv = "  ".join(f"{f} {q['median']:.4f} [{q['q25']:.4f}, {q['q75']:.4f}]" for f, q in row["test_hv"].items())
        reach = row["epochs_to_random_full_final"]
        print(f"{name:>14}: test HV {hv}; reaches random_full's final at {reach['median'] if reach else '-'} epochs")
    if goal:
        print(f"goals: {json.dumps(goal)}")
    print(f"figure: {figure}")
