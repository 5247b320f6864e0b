"""Fronts of accuracy (maximise) vs average exit depth (minimise): data first, files second.

Two fronts (docs/design.md §4):
- the **dense front**: the non-dominated operating points (trial, per-exit thresholds) over every
  completed trial's own curve (records.TrialRecord.operating_points, recomputable from the run's
  val_logits.pt);
  one row per distinct (accuracy, depth), the cheapest in FLOPs among equals;
- the **sampled front**: the completed trials at the thresholds they sampled. It is computed here
  rather than taken from `study.best_trials` because the export always uses these two axes, whatever
  objectives the study searched; the tests check it against `study.best_trials` where they coincide.
  As in Optuna, equal points do not dominate each other, so duplicates on it are all kept.
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

from ee_search.exits import front_indices, hypervolume
from ee_search.exits.report import csv_text
from ee_search.figures import PLOTLY_JS, figure_files, plotly_js, write_files
from ee_search.records import TrialRecord

AXES = (("accuracy", "maximize"), ("avg_exit_depth", "minimize"))
FRONTS = ("dense", "sampled")
_COLUMNS = ("trial_number", "thresholds", "accuracy", "avg_exit_depth", "relative_flops", "mlflow_run_id", "params")

__all__ = ["AXES", "FRONTS", "FrontPoint", "collect_operating_points", "collect_points",
           "front", "front_files", "front_hypervolume", "hypervolume", "latency_column", "latency_front",
           "nondominated", "write_front"]


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
    """An operating point: a trial at one setting of its thresholds (sampled, or from its curve)."""

    trial_number: int
    accuracy: float
    avg_exit_depth: float
    relative_flops: float | None
    thresholds: list[float] | None
    params: dict[str, Any]
    mlflow_run_id: str | None
    on_front: bool = False
    test: dict[str, float] = field(default_factory=dict)  # filled by `--split test` only
    latency: dict[str, float] = field(default_factory=dict)  # latency_ms_b<B>, by `--latency` only

    def row(self) -> dict[str, Any]:
        """The CSV row: the point's fields, lists and params as JSON, test metrics as test_*, then the
        expected latencies."""
        out = {name: getattr(self, name) for name in _COLUMNS}
        out["thresholds"] = json.dumps(self.thresholds)
        out["params"] = json.dumps(self.params, sort_keys=True)
        out.update({f"test_{k}": v for k, v in self.test.items()})
        out.update(self.latency)
        return out


def _completed(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, TrialRecord]]:
    # A completed trial from outside ee-search has no accuracy: nothing to place.
    records = [(t, TrialRecord.read(t)) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return [(t, r) for t, r in records if r.has_result]


def collect_points(study: optuna.Study) -> list[FrontPoint]:
    """Every completed trial at its sampled thresholds, flagged on/off the sampled front."""
    points = [
        FrontPoint(t.number, float(r.accuracy), float(r.avg_exit_depth), r.relative_flops, r.thresholds,
                   dict(t.params), r.mlflow_run_id)
        for t, r in _completed(study)
    ]
    if points:
        values = np.array([[p.accuracy, p.avg_exit_depth] for p in points])
        for p, keep in zip(points, nondominated(values, [True, False])):
            p.on_front = bool(keep)
    return points


def collect_operating_points(study: optuna.Study) -> list[FrontPoint]:
    """Every operating point of every completed trial's own curve, flagged on/off the dense front."""
    points = [
        FrontPoint(t.number, p.accuracy, p.avg_exit_depth, p.relative_flops, p.thresholds, dict(t.params),
                   r.mlflow_run_id)
        for t, r in _completed(study)
        for p in r.points()
    ]
    if points:
        flops = np.array([p.relative_flops if p.relative_flops is not None else np.inf for p in points])
        keep = front_indices(np.array([p.accuracy for p in points]), np.array([p.avg_exit_depth for p in points]),
                             flops)
        for i in keep:
            points[i].on_front = True
    return points


def front(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The front, shallowest first (the order a reader walks the trade-off in)."""
    return sorted((p for p in points if p.on_front), key=lambda p: (p.avg_exit_depth, -p.accuracy))


def front_hypervolume(points: Sequence[FrontPoint]) -> float:
    return hypervolume([(p.accuracy, p.avg_exit_depth) for p in points if p.on_front])


def latency_column(batch: int) -> str:
    return f"latency_ms_b{batch}"


def latency_front(points: Sequence[FrontPoint], column: str) -> list[FrontPoint]:
    """The non-dominated points under (max accuracy, min expected latency `column`) among those that have
    one (the operating points of the trials on the depth front), fastest first."""
    timed = [p for p in points if column in p.latency]
    if not timed:
        return []
    keep = nondominated(np.array([[p.accuracy, p.latency[column]] for p in timed]), [True, False])
    return sorted((p for p, k in zip(timed, keep) if k), key=lambda p: (p.latency[column], -p.accuracy))


# ---------------------------------------------------------------------------------------- files
def front_files(points: Sequence[FrontPoint], study_name: str, kind: str = "dense",
                sampled: Sequence[FrontPoint] = (), latency: dict | None = None) -> dict[str, str | bytes]:
    """`pareto.csv`, `pareto.json`, `pareto.html` and `pareto.png` (by file name) for the `kind` front of
    `points`. For the dense front, `sampled` (the trials at their own thresholds) is drawn too. With
    `latency` (what was measured: device, batches, each front trial's stage costs), the points carry
    expected latencies, and the fronts of accuracy against each are added to the JSON and the figure."""
    best = front(points)
    rows = [p.row() for p in best]
    # Every row's keys: a trial whose best.pt could not be read has no test_* values, wherever it sorts.
    columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else list(FrontPoint(0, 0, 0, None, None, {}, None).row())
    document = {
        "study": study_name,
        "front_kind": kind,
        "axes": {name: direction for name, direction in AXES},
        "n_completed_trials": len({p.trial_number for p in points}),
        "n_operating_points": len(points),
        "hypervolume": front_hypervolume(points),
        "reference_point": {"accuracy": 0.0, "avg_exit_depth": 1.0},
        "front": [_as_dict(p) for p in best],
    }
    figure = dense_front_figure(points, sampled, study_name) if kind == "dense" else front_figure(points, study_name)
    if latency is not None:
        times = [latency_column(b) for b in latency["batches"]]
        document["latency"] = latency | {"fronts": {c: [_as_dict(p) for p in latency_front(points, c)] for c in times}}
        figure = with_latency_fronts(figure, points, latency["batches"], latency["device"])
    return {"pareto.csv": csv_text(rows, columns), "pareto.json": json.dumps(document, indent=2) + "\n",
            **figure_files(figure, "pareto")}


def _as_dict(p: FrontPoint) -> dict[str, Any]:
    out = {k: v for k, v in asdict(p).items() if k not in ("on_front", "test", "latency")}
    return out | ({"test": p.test} if p.test else {}) | ({"latency": p.latency} if p.latency else {})


def write_front(points: Sequence[FrontPoint], out_dir: Path, study_name: str, kind: str = "dense",
                sampled: Sequence[FrontPoint] = (), latency: dict | None = None) -> dict[str, Path]:
    """The front's files in `out_dir`, with one copy of plotly.js beside them: pareto.html is then
    interactive offline (it loads `plotly.min.js` from its own folder). Returns paths by extension."""
    files = front_files(points, study_name, kind, sampled, latency) | {PLOTLY_JS: plotly_js()}
    written = write_files(files, out_dir)
    return {name.removeprefix("pareto.").removesuffix(".min.js"): path for name, path in written.items()}


def _hover(p: FrontPoint, label: str) -> str:
    lines = [f"<b>trial {p.trial_number}</b> {label}", f"accuracy {p.accuracy:.4f}", f"avg exit depth {p.avg_exit_depth:.4f}"]
    if p.relative_flops is not None:
        lines.append(f"relative FLOPs {p.relative_flops:.4f}")
    if p.thresholds is not None:
        lines.append("thresholds " + ", ".join(f"{t:.4g}" for t in p.thresholds))
    lines += [f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in sorted(p.params.items())]
    lines += [f"test {k} {v:.4f}" for k, v in p.test.items()]
    lines += [f"{k} {v:.3f}" for k, v in p.latency.items()]
    if p.mlflow_run_id:
        lines.append(f"MLflow run {p.mlflow_run_id}")
    return "<br>".join(lines)


def _layout(fig, title: str) -> None:
    fig.update_layout(title=title, xaxis_title="average exit depth (k / K, lower = earlier exits)",
                      yaxis_title="accuracy", template="plotly_white", hoverlabel={"align": "left"})


def _trace(points: Sequence[FrontPoint], name: str, label: str, **style):
    """One scatter trace of validation points, with the full hover text of each."""
    import plotly.graph_objects as go

    return go.Scatter(x=[p.avg_exit_depth for p in points], y=[p.accuracy for p in points], name=name,
                      hovertext=[_hover(p, label) for p in points], hoverinfo="text", **style)


def front_figure(points: Sequence[FrontPoint], study_name: str):
    """The sampled front: every completed trial at its own thresholds, the front highlighted."""
    import plotly.graph_objects as go

    best = front(points)
    fig = go.Figure()
    fig.add_trace(_trace([p for p in points if not p.on_front], "completed trials", "", mode="markers",
                         marker={"size": 8, "color": "lightslategray", "opacity": 0.7}))
    fig.add_trace(_trace(best, "Pareto front", "(Pareto front)", mode="lines+markers",
                         line={"shape": "hv", "color": "crimson"},
                         marker={"size": 11, "color": "crimson", "symbol": "diamond"}))
    _layout(fig, f"{study_name}: validation accuracy vs average exit depth "
                 f"({len(best)} on the front of {len(points)} completed trials)")
    return fig


def dense_front_figure(points: Sequence[FrontPoint], sampled: Sequence[FrontPoint], study_name: str):
    """The dense front (validation, and test where measured), each trial's own curve (hidden until
    clicked in the legend) and the trials at their sampled thresholds."""
    import plotly.graph_objects as go

    best = front(points)
    fig = go.Figure()
    for number in sorted({p.trial_number for p in points}):
        curve = sorted((p for p in points if p.trial_number == number), key=lambda p: p.avg_exit_depth)
        fig.add_trace(_trace(curve, f"trial {number} curve", "(own curve)", mode="lines", opacity=0.6,
                             line={"shape": "hv", "width": 1}, visible="legendonly", legendgroup="curves"))
    if sampled:
        fig.add_trace(_trace(sampled, "trials at their sampled thresholds", "(sampled thresholds)", mode="markers",
                             marker={"size": 8, "color": "lightslategray", "opacity": 0.8}))
    fig.add_trace(_trace(best, f"dense front, validation ({len(best)} points)", "(dense front)",
                         mode="lines+markers", line={"shape": "hv", "color": "crimson"},
                         marker={"size": 6, "color": "crimson"}))
    tested = [p for p in best if "accuracy" in p.test]
    if tested:
        fig.add_trace(go.Scatter(
            x=[p.test["avg_exit_depth"] for p in tested], y=[p.test["accuracy"] for p in tested],
            mode="lines+markers", line={"shape": "hv", "color": "royalblue", "dash": "dot"},
            marker={"size": 6, "color": "royalblue", "symbol": "x"},
            name="same operating points on the test split (reported, never chosen from)",
            hovertext=[_hover(p, "(test split)") for p in tested], hoverinfo="text",
        ))
    _layout(fig, f"{study_name}: accuracy vs average exit depth, dense front of "
                 f"{len({p.trial_number for p in points})} completed trials (hypervolume {front_hypervolume(points):.4f})")
    return fig


def with_latency_fronts(depth, points: Sequence[FrontPoint], batches: Sequence[int], device: str):
    """The depth figure on top and, under it, one panel per batch size: the operating points of the
    trials on the depth front at their expected latency, the depth front's rows among them, and the
    front of accuracy against that latency."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1 + len(batches), cols=1, vertical_spacing=0.22 / len(batches))
    for trace in depth.data:
        fig.add_trace(trace, row=1, col=1)
    fig.update_xaxes(title_text=depth.layout.xaxis.title.text, row=1, col=1)
    best = front(points)
    for row, batch in enumerate(batches, start=2):
        column = latency_column(batch)
        timed = [p for p in points if column in p.latency]
        fig.add_trace(_latency_trace(timed, column, "(front trial)", name=f"front trials' operating points, batch {batch}",
                                     mode="markers", marker={"size": 5, "color": "lightslategray", "opacity": 0.5}),
                      row=row, col=1)
        fig.add_trace(_latency_trace([p for p in best if column in p.latency], column, "(depth front)",
                                     name=f"depth front at its latency, batch {batch}", mode="markers",
                                     marker={"size": 7, "color": "crimson", "symbol": "x"}), row=row, col=1)
        fig.add_trace(_latency_trace(latency_front(points, column), column, "(latency front)",
                                     name=f"latency front, batch {batch} ({device})", mode="lines+markers",
                                     line={"shape": "hv", "color": "seagreen"},
                                     marker={"size": 7, "color": "seagreen", "symbol": "diamond"}), row=row, col=1)
        fig.update_xaxes(title_text=f"expected latency of a call on {batch} sample(s), {device} (ms)", row=row, col=1)
    fig.update_yaxes(title_text="accuracy")
    fig.update_layout(title=f"{depth.layout.title.text}; below, against expected latency on {device}",
                      template="plotly_white", hoverlabel={"align": "left"}, height=480 * (1 + len(batches)))
    return fig


def _latency_trace(points: Sequence[FrontPoint], column: str, label: str, **style):
    import plotly.graph_objects as go

    return go.Scatter(x=[p.latency[column] for p in points], y=[p.accuracy for p in points],
                      hovertext=[_hover(p, label) for p in points], hoverinfo="text", **style)
