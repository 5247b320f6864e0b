"""A trial's trade-off curves as files: CSV for tools, a plotly figure for people (made into HTML and
PNG files by ee_search.figures)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from ee_search.exits.operating_points import OperatingPoint


def csv_text(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text (header from `columns`, or from the first row's keys)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(columns if columns is not None else rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(rows: Sequence[dict], path: Path, columns: Sequence[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(csv_text(rows, columns), newline="")


def tradeoff_rows(shared: Sequence[dict[str, float]], points: Sequence[OperatingPoint]) -> list[dict]:
    """`exits/tradeoff.csv`: the network's own front over per-exit thresholds (kind `per_exit`, the
    operating points `ee-search pareto` builds the dense front from), then the sweep of one threshold
    shared by every side exit (kind `shared`). `thresholds` is a JSON list, one per side exit."""
    rows = [{"kind": "per_exit", **p.row(), "thresholds": json.dumps(list(p.thresholds))} for p in points]
    for r in shared:
        k_side = sum(1 for key in r if key.startswith("exit_")) - 1
        rest = {key: value for key, value in r.items() if key != "threshold"}
        rows.append({"kind": "shared", "thresholds": json.dumps([r["threshold"]] * k_side), **rest})
    return rows


def tradeoff_figure(
    shared: Sequence[dict[str, float]],
    points: Sequence[OperatingPoint] = (),
    chosen: dict[str, float] | None = None,
    title: str = "Exit trade-off",
    criterion: str = "max_softmax",
) -> go.Figure:
    """Accuracy against relative FLOPs: the network's front over per-exit thresholds, the sweep of
    one shared threshold, and (`chosen`) the trial's own sampled thresholds. Hover shows the
    thresholds and where samples leave."""
    def shares(r: dict) -> str:
        return " · ".join(f"{k.removesuffix('_fraction')}: {v:.1%}" for k, v in r.items()
                          if k.startswith("exit_") and k.endswith("_fraction"))

    fig = go.Figure()
    if points:
        fig.add_trace(go.Scatter(
            x=[p.relative_flops for p in points], y=[p.accuracy for p in points], mode="lines+markers",
            name=f"per-exit thresholds ({len(points)} operating points)", line={"color": "crimson"},
            marker={"size": 5}, hoverinfo="text",
            hovertext=[f"thresholds {', '.join(f'{t:.4g}' for t in p.thresholds)}<br>accuracy {p.accuracy:.4f}<br>"
                       f"avg exit depth {p.avg_exit_depth:.3f}<br>relative FLOPs {p.relative_flops:.3f}<br>"
                       + shares(p.row()) for p in points],
        ))
    fig.add_trace(go.Scatter(
        x=[r["relative_flops"] for r in shared], y=[r["accuracy"] for r in shared], mode="lines+markers",
        name=f"one shared {criterion} threshold", hoverinfo="text",
        hovertext=[f"threshold {r['threshold']:.4f}<br>accuracy {r['accuracy']:.4f}<br>avg exit depth "
                   f"{r['avg_exit_depth']:.3f}<br>relative FLOPs {r['relative_flops']:.3f}<br>" + shares(r)
                   for r in shared],
        marker={"size": 4, "color": [r["threshold"] for r in shared], "colorscale": "Viridis",
                "colorbar": {"title": "shared threshold"}, "showscale": True},
        line={"color": "lightslategray"},
    ))
    if chosen is not None:
        fig.add_trace(go.Scatter(
            x=[chosen["relative_flops"]], y=[chosen["accuracy"]], mode="markers", name="trial's thresholds",
            marker={"size": 14, "symbol": "star", "color": "gold", "line": {"color": "black", "width": 1}},
            hovertext=[f"trial's thresholds<br>accuracy {chosen['accuracy']:.4f}<br>"
                       f"avg exit depth {chosen['avg_exit_depth']:.3f}<br>relative FLOPs {chosen['relative_flops']:.3f}"],
            hoverinfo="text",
        ))
    fig.update_layout(
        title=title,
        xaxis_title="relative FLOPs (1 = backbone + final head)",
        yaxis_title="validation accuracy",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
