"""What the commands print: a line per finished trial, the run summary, the space, the status table."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from ee_search.records import PRUNED_BY_PRUNER, TrialRecord, state_counts

_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _reason(trial: FrozenTrial) -> str:
    record = TrialRecord.read(trial)
    if trial.state == TrialState.FAIL:
        if record.resumed_by is not None:  # SIGTERM, a full disk: not an outcome (docs/design.md §9)
            return f"interrupted, saved: trial {record.resumed_by} resumes it"
        return record.error or "failed"
    reason = record.stop_reason or ""
    return f"{reason}: {record.prune_detail}" if reason == PRUNED_BY_PRUNER and record.prune_detail else reason


def print_trial_line(console: Console, trial: FrozenTrial, objectives: Sequence[str]) -> None:
    state = trial.state.name
    record = TrialRecord.read(trial)
    parts = [f"trial {trial.number:>3}", f"[{_STATE_STYLE.get(state, '')}]{state:<8}[/]"]
    if trial.values and trial.state.name == "COMPLETE":  # a pruned trial's value is Optuna's last report
        parts += [f"{name} {value:.4f}" for name, value in zip(objectives, trial.values)]
    if record.epochs_trained is not None:
        parts.append(f"{record.epochs_trained} epochs")
    reason = _reason(trial)
    if reason:
        parts.append(f"({reason})")
    if record.mlflow_run_id is not None:
        parts.append(f"run {record.mlflow_run_id[:8]}")
    console.print("  ".join(parts), soft_wrap=True)


_MAX_ROWS = 12


def _spread(items: Sequence, count: int) -> list:
    """At most `count` items, evenly spread from first to last (a long front stays readable)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def print_run_summary(console: Console, study_file, summary, locating_flags: str = "") -> None:
    from ee_search.config import redact
    from ee_search.pareto import collect_operating_points, collect_points, front, front_hypervolume

    config = study_file.config
    mine = summary.trials()
    counts = state_counts(mine)
    total = len(summary.study.get_trials(deepcopy=False))
    minutes, seconds = divmod(int(round(summary.seconds)), 60)
    console.print(
        f"\n[bold]{config.name}[/]: {len(mine)} trial(s) this run ({counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed) in {minutes}m{seconds:02d}s; "
        f"{total} in the study."
    )
    sampled = collect_points(summary.study)
    points = collect_operating_points(summary.study)
    best = front(points)
    if best:
        console.print(
            f"Dense front: {len(best)} operating points from {len({p.trial_number for p in best})} of "
            f"{len(sampled)} completed trials, hypervolume {front_hypervolume(points):.4f} "
            f"(at their sampled thresholds: {len(front(sampled))} trials on the front, hypervolume "
            f"{front_hypervolume(sampled):.4f}; reference accuracy 0, depth 1)."
        )
        shown = _spread(best, _MAX_ROWS)
        title = "Pareto front (dense): accuracy vs avg exit depth" + (
            f", {len(shown)} of {len(best)} points evenly spread" if len(shown) < len(best) else "")
        table = Table(title=title)
        for column in ("trial", "accuracy", "avg_exit_depth", "relative_flops", "thresholds", "MLflow run"):
            table.add_column(column, justify="right" if column != "thresholds" else "left")
        for p in shown:
            table.add_row(str(p.trial_number), _fmt(p.accuracy), _fmt(p.avg_exit_depth), _fmt(p.relative_flops, 3),
                          ", ".join(f"{t:.3f}" for t in p.thresholds or []), (p.mlflow_run_id or "")[:8])
        console.print(table)
    study_arg = f"{study_file.path} {locating_flags}".strip()
    console.print(
        f"MLflow: experiment '{config.name}' in {redact(config.tracking.uri)}, parent run "
        f"{summary.parent_run_id[:8]}.\nNext:  ee-search ui {study_arg}    "
        f"ee-search pareto {study_arg} --out pareto/    ee-search status {study_arg}"
    )


def print_space(console: Console, study_file) -> None:
    from ee_search.search.space import dimensions

    config = study_file.config
    dims = dimensions(config)
    console.print(
        f"{study_file.path}: ok. Study '{config.name}': {config.model.name} ({config.num_exits} exits) on "
        f"{config.data.dataset}; objectives {', '.join(f'{o} ({d})' for o, d in zip(config.search.objectives, config.directions))}; "
        f"sampler {config.search.sampler.type}, pruner {config.search.pruner.type}, n_trials {config.search.n_trials}."
    )
    if not dims:
        console.print("Search space: empty (every trial runs the file as written).")
        return
    table = Table(title=f"Search space ({len(dims)} dimensions, in sampling order)")
    for column in ("path", "type", "values", "per_item", "when"):
        table.add_column(column)
    for dim in dims:
        d = dim.describe()
        table.add_row(d["path"], d["type"], d["values"], d["per_item"], d["when"])
    console.print(table)


def print_status(console: Console, study: optuna.Study) -> None:
    names = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    table = Table(title=f"Study '{study.study_name}': {len(study.trials)} trial(s)")
    for column in ("trial", "state", *names, "epochs", "stop / prune reason", "MLflow run id"):
        table.add_column(column, overflow="fold")
    for t in study.get_trials(deepcopy=False):
        # Optuna stores a pruned single-objective trial's last intermediate value as its value: not an
        # objective, so it is not shown as one.
        values = [_fmt(v) for v in t.values] if t.values and t.state.name == "COMPLETE" else ["-"] * len(names)
        style = _STATE_STYLE.get(t.state.name, "")
        record = TrialRecord.read(t)
        table.add_row(str(t.number), f"[{style}]{t.state.name}[/]", *values,
                      str(record.epochs_trained if record.epochs_trained is not None else "-"), _reason(t),
                      record.mlflow_run_id or "-")
    console.print(table)
