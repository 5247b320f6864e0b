"""`search_table.py paired`: the live confirmation's shape (benchmarks/pruning.py), replayed over the
table at many seeds: a study of N trials with the default's pruner against the same study with
`search.pruner.type=none`, both with the same sampler seed, and per seed the epochs each spent and
the dense test HV each ended with (and the unpruned study's HV when it had spent what the pruned one
spent in all: the saving at equal compute).

Live, that check costs about 7 minutes a seed on 2 cores, so it can afford 3 seeds; here a seed
costs about a second, so the spread across seeds (which at 3 seeds is as large as the effect) is
measured, and pruner settings can be compared by where they sit on the trade-off between epochs
saved and front kept. `--variant NAME PATH=VALUE ...` adds a setting to compare: its `--set` values
apply to both sides of its pair, and only the pruned side keeps the pruner. `--never-prune INDEX ...`
is an oracle: those configurations of the table are never pruned (say, the late bloomers `limits`
names), which bounds what a pruner that recognised them could gain. `--foresight` replays every
setting a second time with the other oracle, a pruner that judges every trial by its final best
(_table_replay.ForesightPruner): the bound of any pruner judging this monitor with these rungs;
`--look-ahead N` lets it see only N epochs ahead, to ask how far a predictor would have to see. The
figure joins each setting to its twin with foresight, so the gap between the two curves is what the
monitor's early order costs.

One difference from live remains: the table is a grid, so a converged sampler proposes
configurations it has trained before; such a trial is pruned untrained (search.skip_duplicates) and
still counts as one of the N, where live a continuous space gives a new, nearby configuration.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timezone
from typing import Any

from _table import read_complete_table
from _table_replay import run_optuna, value_at

DEFAULT = "ee-search"
UNPRUNED = "search.pruner.type=none"
GOAL_SAVED = 0.5  # the live goal: at least 50 % fewer epochs ...
GOAL_RATIO = 0.99  # ... at a dense test HV at least 0.99 times pruner none's
FORESIGHT_SUFFIX = " + foresight"  # a setting's twin replayed with the foresight oracle (--foresight)


def paired_run(table, seed: int, n_trials: int, sets: tuple[str, ...],
               never_prune: frozenset[int] = frozenset(), foresight: bool = False,
               look_ahead: int | None = None) -> dict[str, Any]:
    """One seed: the pruned study and its unpruned twin, N trials each (no epoch budget)."""
    never = 10**9
    pruned = run_optuna(table, DEFAULT, seed, never, sets, n_trials=n_trials, never_prune=never_prune,
                        foresight=foresight, look_ahead=look_ahead)
    unpruned = run_optuna(table, DEFAULT, seed, never, (*sets, UNPRUNED), n_trials=n_trials)
    return {"seed": seed,
            "pruned": {"epochs": pruned.epochs, "test_hv": float(pruned.curve[-1][1]), "val_hv": float(pruned.curve[-1][2])},
            "unpruned": {"epochs": unpruned.epochs, "test_hv": float(unpruned.curve[-1][1]), "val_hv": float(unpruned.curve[-1][2]),
                         # where the unpruned study stood when it had spent what the pruned one spent in all
                         "test_hv_at_pruned_epochs": float(value_at(unpruned.curve, pruned.epochs))}}


def summarise_pairs(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs saved over all seeds together and the HV ratio of the means, as pruning.py takes them
    live (the goal), and the spread of the per-seed ratios."""
    spent = sum(p["pruned"]["epochs"] for p in pairs)
    spent_unpruned = sum(p["unpruned"]["epochs"] for p in pairs)
    ratios = [p["pruned"]["test_hv"] / p["unpruned"]["test_hv"] for p in pairs]
    quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    saved = 1.0 - spent / spent_unpruned
    median_ratio = statistics.median(ratios)
    ratio_of_means = (statistics.mean(p["pruned"]["test_hv"] for p in pairs)
                      / statistics.mean(p["unpruned"]["test_hv"] for p in pairs))
    return {
        "epochs_saved": round(saved, 4),
        "test_hv_ratio": {"median": round(median_ratio, 4), "q25": round(quart[0], 4), "q75": round(quart[2], 4),
                          "mean": round(statistics.mean(ratios), 4),
                          # pruning.py's figure, and the goal's: the pruned side's mean HV over the unpruned side's
                          "of_means": round(ratio_of_means, 4),
                          "fraction_of_seeds_at_least_0.99": round(sum(r >= GOAL_RATIO for r in ratios) / len(ratios), 3)},
        "test_hv_ratio_at_equal_epochs": {
            "of_means": round(statistics.mean(p["pruned"]["test_hv"] for p in pairs)
                              / statistics.mean(p["unpruned"]["test_hv_at_pruned_epochs"] for p in pairs), 4)},
        "median_test_hv": {"pruned": statistics.median(p["pruned"]["test_hv"] for p in pairs),
                           "unpruned": statistics.median(p["unpruned"]["test_hv"] for p in pairs)},
        "goal": {"epochs_saved_at_least": GOAL_SAVED, "ratio_of_means_at_least": GOAL_RATIO,
                 "holds": bool(saved >= GOAL_SAVED and ratio_of_means >= GOAL_RATIO)},
    }


def paired_main(args) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = read_complete_table(args.table)
    variants = {DEFAULT: ()} | {name: tuple(sets) for name, *sets in (args.variant or [])}
    never_prune = frozenset(args.never_prune or ())
    foresight, look_ahead = getattr(args, "foresight", False), getattr(args, "look_ahead", None)
    started, results = time.perf_counter(), {}
    for name, sets in variants.items():
        for oracle in (False, True) if foresight else (False,):
            pairs = [paired_run(table, seed, args.trials, sets, never_prune, oracle, look_ahead)
                     for seed in range(args.seeds)]
            key = f"{name}{FORESIGHT_SUFFIX}" if oracle else name
            results[key] = {"sets": list(sets), "foresight": oracle, "pairs": pairs, "summary": summarise_pairs(pairs)}
            print(f"{key:>14}: {json.dumps(results[key]['summary'])} ({time.perf_counter() - started:.0f} s)", flush=True)
    record = {"benchmark": "search_table paired", "table": str(args.table), "study": table.meta.get("study"),
              "trials": args.trials, "seeds": args.seeds, "unpruned": UNPRUNED,
              "oracle_never_prunes": sorted(never_prune), "oracle_foresight": foresight,
              "oracle_look_ahead": look_ahead if foresight else None,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "variants": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    if len(results) > 1:
        draw_tradeoff(record, args.json.with_suffix(".png"))
    return 0


def draw_tradeoff(record: dict[str, Any], path) -> None:
    """Epochs saved against the HV ratio of the means (the per-seed ratios' IQR as bars), one point
    per variant; the goal is the corner right of and above the dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # 20 colours and 7 markers: a dozen variants stay apart
    colors, markers, points = {}, {}, {}
    for i, (name, variant) in enumerate(sorted(record["variants"].items(), key=lambda item: item[1].get("foresight", False))):
        s = variant["summary"]
        r = s["test_hv_ratio"]
        x, y = s["epochs_saved"], r["of_means"]
        twin = name.removesuffix(FORESIGHT_SUFFIX) if variant.get("foresight") else None
        style = {"mfc": "none", "color": colors[twin]} if twin in colors else {}
        marker = markers[twin] if twin in markers else "osD^vPX"[i % 7]
        bars = ax.errorbar(x, y, yerr=[[max(0.0, y - r["q25"])], [max(0.0, r["q75"] - y)]],
                           fmt=marker, capsize=3, label=name, **style)
        colors[name], markers[name], points[name] = bars.lines[0].get_color(), marker, (x, y)
        if twin in points:  # the setting and its twin with foresight: what the monitor's early order costs
            ax.plot(*zip(points[twin], (x, y)), color=colors[twin], linestyle="--", linewidth=0.8)
    ax.axvline(GOAL_SAVED, color="grey", linestyle=":")
    ax.axhline(GOAL_RATIO, color="grey", linestyle=":")
    ax.set(xlabel="epochs saved against pruner none",
           ylabel="dense test HV, pruned / unpruned (ratio of means; IQR of seeds)")
    ax.set_title(f"{record['study']}: {record['trials']} trials, {record['seeds']} seeds; "
                 "goal: up and right of the dotted lines", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
