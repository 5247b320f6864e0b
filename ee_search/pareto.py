"""The Pareto front of accuracy (maximise) vs average exit depth (minimise): data first, files second.

The front is computed here rather than taken from `study.best_trials` because the export always uses
these two axes, whatever objectives the study searched (a study may optimise accuracy alone, or add
relative FLOPs); the test suite checks this code against `study.best_trials` where the two coincide.
As in Optuna, equal points do not dominate each other, so duplicates on the front are all kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ee_search.exits.report import write_csv, write_html

AXES = (("accuracy", "maximize"), ("avg_exit_depth", "minimize"))


def nondominated(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the rows of `values` [N, M] that no other row dominates.

    Row a dominates b when a is at least as good in every column and strictly better in one."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ValueError(f"values must be [N, {len(maximize)}] but got shape {values.shape}")
    loss = values * np.where(np.asarray(maximize), -1.0, 1.0)  # everything minimised
    no_worse = (loss[:, None, :] <= loss[None, :, :]).all(axis=2)  # [a, b]: a no worse than b
    better = (loss[:, None, :] < loss[None, :, :]).any(axis=2)
    dominates = no_worse & better
    return ~dominates.any(axis=0)


@dataclass
class FrontPoint:
    trial_number: int
    accuracy: float
    avg_exit_depth: float
    relative_flops: float | None
    thresholds: list[float] | None
    params: dict[str, Any]
    mlflow_run_id: str | None
    on_front: bool = False
    test: dict[str, float] = field(default_factory=dict)  # filled by `--split test` only

    def row(self) -> dict[str, Any]:
        out = {
            "trial_number": self.trial_number,
            "accuracy": self.accuracy,
            "avg_exit_depth": self.avg_exit_depth,
            "relative_flops": self.relative_flops,
            "thresholds": json.dumps(self.thresholds),
            "params": json.dumps(self.params, sort_keys=True),
            "mlflow_run_id": self.mlflow_run_id,
        }
        out.update({f"test_{k}": v for k, v in self.test.items()})
        return out


def collect_points(study: optuna.Study) -> list[FrontPoint]:
    """Every completed trial as a point, flagged on/off the front."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    points = []
    for t in trials:
        attrs = t.user_attrs
        if "accuracy" not in attrs or "avg_exit_depth" not in attrs:
            continue  # a completed trial from outside ee-search: nothing to place
        points.append(
            FrontPoint(
                trial_number=t.number,
                accuracy=float(attrs["accuracy"]),
                avg_exit_depth=float(attrs["avg_exit_depth"]),
                relative_flops=attrs.get("relative_flops"),
                thresholds=attrs.get("thresholds"),
                params=dict(t.params),
                mlflow_run_id=attrs.get("mlflow_run_id"),
            )
        )
    if points:
        values = np.array([[p.accuracy, p.avg_exit_depth] for p in points])
        for p, keep in zip(points, nondominated(values, [True, False])):
            p.on_front = bool(keep)
    return points


def front(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The front, shallowest first (the order a reader walks the trade-off in)."""
    return sorted((p for p in points if p.on_front), key=lambda p: (p.avg_exit_depth, -p.accuracy))


# ---------------------------------------------------------------------------------------- files
def write_front(points: Sequence[FrontPoint], out_dir: Path, study_name: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    best = front(points)
    paths = {name: out_dir / f"pareto.{name}" for name in ("csv", "json", "html")}
    rows = [p.row() for p in best]
    columns = list(rows[0]) if rows else list(FrontPoint(0, 0, 0, None, None, {}, None).row())
    write_csv(rows, paths["csv"], columns)
    document = {
        "study": study_name,
        "axes": {name: direction for name, direction in AXES},
        "n_completed_trials": len(points),
        "front": [
            {k: v for k, v in asdict(p).items() if k not in ("on_front", "test")} | ({"test": p.test} if p.test else {})
            for p in best
        ],
    }
    paths["json"].write_text(json.dumps(document, indent=2) + "\n")
    write_html(front_figure(points, study_name), paths["html"])
    return paths


def front_figure(points: Sequence[FrontPoint], study_name: str):
    import plotly.graph_objects as go

    def hover(p: FrontPoint) -> str:
        lines = [
            f"<b>trial {p.trial_number}</b>{' (Pareto front)' if p.on_front else ''}",
            f"accuracy {p.accuracy:.4f}",
            f"avg exit depth {p.avg_exit_depth:.4f}",
        ]
        if p.relative_flops is not None:
            lines.append(f"relative FLOPs {p.relative_flops:.4f}")
        if p.thresholds is not None:
            lines.append("thresholds " + ", ".join(f"{t:.4g}" for t in p.thresholds))
        lines += [f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in sorted(p.params.items())]
        lines += [f"test {k} {v:.4f}" for k, v in p.test.items()]
        if p.mlflow_run_id:
            lines.append(f"MLflow run {p.mlflow_run_id}")
        return "<br>".join(lines)

    others = [p for p in points if not p.on_front]
    best = front(points)
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[p.avg_exit_depth for p in others], y=[p.accuracy for p in others], mode="markers",
        name="completed trials", marker={"size": 8, "color": "lightslategray", "opacity": 0.7},
        hovertext=[hover(p) for p in others], hoverinfo="text",
    ))
    fig.add_trace(go.Scatter(
        x=[p.avg_exit_depth for p in best], y=[p.accuracy for p in best], mode="lines+markers",
        line={"shape": "hv", "color": "crimson"}, name="Pareto front",
        marker={"size": 11, "color": "crimson", "symbol": "diamond"},
        hovertext=[hover(p) for p in best], hoverinfo="text",
    ))
    fig.update_layout(
        title=f"{study_name}: validation accuracy vs average exit depth "
        f"({len(best)} on the front of {len(points)} completed trials)",
        xaxis_title="average exit depth (k / K, lower = earlier exits)",
        yaxis_title="validation accuracy",
        template="plotly_white",
        hoverlabel={"align": "left"},
    )
    return fig


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float] = (0.0, 1.0)) -> float:
    """Area dominated by (accuracy, avg_exit_depth) points up to the reference (accuracy 0, depth 1).

    In two dimensions this is a sort and a sum: walk the points from shallowest to deepest, and each
    one that is more accurate than all before it adds the rectangle between its depth, the reference
    depth, its accuracy and the best accuracy so far. Dominated points add nothing."""
    ref_acc, ref_depth = reference
    inside = sorted((d, a) for a, d in points if a > ref_acc and d < ref_depth)
    area, best = 0.0, ref_acc
    for depth, accuracy in inside:
        if accuracy > best:
            area += (ref_depth - depth) * (accuracy - best)
            best = accuracy
    return area
