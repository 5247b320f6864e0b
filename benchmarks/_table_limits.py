"""`search_table.py limits`: what bounds any strategy on a table, read off the table itself.

- The whole grid's dense front (every configuration trained with the study's early stopping, its
  kept epoch): the most any search over this grid can reach, on val and on test.
- Each configuration alone: its stop and kept epoch, its own front's val and test HV, and the rank
  of its monitor among all configurations at each rung of the study's pruner (0 = the best). A
  configuration near the top at the end but in the bottom half at the first rung is a late bloomer:
  a rung rule on the monitor that keeps half of what reaches the rung, or less, stops it there.
- The figure (next to the JSON): every configuration's monitor against epochs, the best ones and
  each rung's median marked.
- Val against test: the configurations ranked by their own val HV, with their test rank. Every
  strategy picks on val; where the val order and the test order disagree, a better val front need
  not be a better test front.
- With `--retrained DIR ...` (tables of some of the same configurations recorded with `--trial N`,
  that is trained as other live trials would be): per configuration, its own val and test HV and its
  monitor's rank at each rung (against the table's configurations) for every training seed: what
  training noise alone moves, which a table of one seed per configuration cannot show.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np

from _table import Curve, Table, config_key, dense_front, kept_epoch, read_table, stop_epoch
from ee_search.config import load_study_file
from ee_search.metrics import monitor_mode
from ee_search.search.pruning import best_so_far, is_rung


def rung_epochs(table: Table) -> list[int]:
    """The epochs the table's study pruner judges (all from the first rung on if it has no factor)."""
    pruner = load_study_file(table.folder / "study.yaml", list(table.meta.get("overrides", []))).config.search.pruner
    return [e for e in range(1, table.max_epochs + 1) if is_rung(e, pruner.n_warmup_epochs + 1, pruner.rung_factor)]


def limits(table: Table, top: int = 8) -> dict[str, Any]:
    rungs = rung_epochs(table)
    kept_rows, configurations = [], []
    for curve in table.curves:
        own = own_result(table, curve, rungs)
        kept_rows.append(curve.epochs[own["kept_epoch"] - 1])
        configurations.append({"index": curve.index, "values": curve.values, **own})
    by_val = sorted(configurations, key=lambda c: -c["val_hv"])
    by_test = sorted(configurations, key=lambda c: -c["test_hv"])
    test_rank = {c["index"]: r for r, c in enumerate(by_test)}
    half = len(configurations) / 2
    grid = dense_front(kept_rows)
    return {
        "grid_front": {"val_hv": round(grid.val_hypervolume, 6), "test_hv": round(grid.test_hypervolume, 6),
                       "points": grid.size},
        "rungs": rungs,
        "best_by_val": [{"index": c["index"], "val_hv": c["val_hv"], "test_hv": c["test_hv"],
                         "test_rank": test_rank[c["index"]], "monitor_rank_at_rung": c["monitor_rank_at_rung"]}
                        for c in by_val[:top]],
        "late_bloomers": [c["index"] for c in by_val[:top]
                          if rungs and c["monitor_rank_at_rung"][str(rungs[0])] >= half],
        "configurations": configurations,
    }


def own_result(table: Table, curve: Curve, rungs: list[int]) -> dict[str, Any]:
    """One configuration's curve judged as a live trial: where early stopping stops it and the epoch it
    keeps, that epoch's own front (val and test HV), and its monitor's rank at each rung against
    `table`'s other configurations (0 = the best)."""
    es = table.meta["early_stopping"]
    monitor, mode = es["monitor"], monitor_mode(es["monitor"])
    stopped = stop_epoch(curve, monitor, mode, es["patience"], es["tol"])
    kept = kept_epoch(curve, stopped, monitor, mode, es["tol"])
    own = dense_front([curve.epochs[kept - 1]])
    sign = -1.0 if mode == "min" else 1.0

    def rank(epoch: int) -> int:
        mine = best_so_far(curve.monitor(monitor), epoch, mode)
        mine = -np.inf if mine is None else sign * mine
        others = (best_so_far(c.monitor(monitor), epoch, mode) for c in table.curves if c.values != curve.values)
        return sum(sign * v > mine for v in others if v is not None)

    return {"stop_epoch": stopped, "kept_epoch": kept,
            "val_hv": round(float(own.val_hypervolume), 6), "test_hv": round(float(own.test_hypervolume), 6),
            "monitor_rank_at_rung": {str(e): rank(e) for e in rungs}}


def retrained(table: Table, others: list[Table], rungs: list[int]) -> dict[str, Any]:
    """Each configuration recorded in `others` too, beside its own record: training seed by seed."""
    seeds = sorted({int(t.meta.get("trial", 0)) for t in [table, *others]})
    rows = []
    for curve in table.curves:
        key = config_key(curve.values)
        runs = {int(table.meta.get("trial", 0)): curve}
        runs |= {int(t.meta.get("trial", 0)): c for t in others for c in t.curves if config_key(c.values) == key}
        if len(runs) < 2:
            continue
        results = {trial: own_result(table, c, rungs) for trial, c in sorted(runs.items())}
        val = [r["val_hv"] for r in results.values()]
        rows.append({"index": curve.index, "values": curve.values, "trials": list(results),
                     "val_hv": val, "test_hv": [r["test_hv"] for r in results.values()],
                     "val_hv_range": round(max(val) - min(val), 6),
                     "monitor_rank_at_rung": {str(e): [r["monitor_rank_at_rung"][str(e)] for r in results.values()]
                                              for e in rungs}})
    ranges = [r["val_hv_range"] for r in rows]
    return {"trials": seeds, "configurations": rows,
            "val_hv_range": {"median": float(np.median(ranges)), "max": max(ranges)} if ranges else None}


def draw_curves(table: Table, result: dict[str, Any], path) -> None:
    """Every configuration's monitor (best so far) against epochs, grey; the top configurations by val
    in colour, dashed if a late bloomer; each rung's median over the grid marked: the curves that
    show why a rung rule stops the late bloomers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitor = table.meta["early_stopping"]["monitor"]
    sign = -1.0 if monitor_mode(monitor) == "min" else 1.0
    best = {c.index: sign * np.fmax.accumulate([sign * v for v in c.monitor(monitor)]) for c in table.curves}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for values in best.values():
        ax.plot(range(1, len(values) + 1), values, color="lightgrey", linewidth=0.8, zorder=1)
    for row in result["best_by_val"][:4]:
        values = best[row["index"]]
        style = "--" if row["index"] in result["late_bloomers"] else "-"
        ax.plot(range(1, len(values) + 1), values, style, linewidth=2, zorder=3,
                label=f"config {row['index']}: val HV {row['val_hv']:.3f}, test HV {row['test_hv']:.3f}")
    for epoch in result["rungs"]:
        at = [v[epoch - 1] for v in best.values() if len(v) >= epoch and np.isfinite(v[epoch - 1])]
        ax.scatter([epoch], [np.median(at)], marker="_", s=400, color="black", zorder=4)
    ax.set(xlabel="epoch", ylabel=f"{monitor} (best so far)",
           title=f"{result['study']}: {len(best)} configurations; black: each rung's median over the grid")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def limits_main(args) -> int:
    table = read_table(args.table)
    result = {"benchmark": "search_table limits", "table": str(args.table), "study": table.meta.get("study"),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **limits(table)}
    if args.retrained:
        result["retrained"] = retrained(table, [read_table(folder) for folder in args.retrained], result["rungs"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    draw_curves(table, result, args.json.with_suffix(".png"))
    print(f"grid front: {json.dumps(result['grid_front'])}; rungs {result['rungs']}")
    for c in result["best_by_val"]:
        print(f"  config {c['index']:>4}: val HV {c['val_hv']:.4f} test HV {c['test_hv']:.4f} (test rank {c['test_rank']}), "
              f"monitor rank at rungs {c['monitor_rank_at_rung']}")
    print(f"late bloomers (top {len(result['best_by_val'])} by val, bottom half at the first rung): {result['late_bloomers']}")
    for c in result.get("retrained", {}).get("configurations", []):
        print(f"  config {c['index']:>4} trained as trials {c['trials']}: val HV {c['val_hv']}, test HV {c['test_hv']}, "
              f"monitor rank at rungs {c['monitor_rank_at_rung']}")
    return 0
