"""The trade-off curve as files: CSV for tools, a plotly HTML figure for people."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go


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


def tradeoff_figure(
    rows: Sequence[dict[str, float]],
    chosen: dict[str, float] | None = None,
    title: str = "Exit trade-off",
    criterion: str = "max_softmax",
) -> go.Figure:
    """Accuracy against relative FLOPs as the shared threshold moves; hover shows the threshold and
    where samples leave. `chosen` marks the trial's own (per-exit) thresholds."""
    exits = sorted(k for k in rows[0] if k.startswith("exit_") and k.endswith("_fraction"))
    hover = [
        f"threshold {r['threshold']:.4f}<br>accuracy {r['accuracy']:.4f}<br>"
        f"avg exit depth {r['avg_exit_depth']:.3f}<br>relative FLOPs {r['relative_flops']:.3f}<br>"
        + " · ".join(f"{e.removesuffix('_fraction')}: {r[e]:.1%}" for e in exits)
        for r in rows
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r["relative_flops"] for r in rows],
            y=[r["accuracy"] for r in rows],
            mode="lines+markers",
            name=f"shared {criterion} threshold",
            hovertext=hover,
            hoverinfo="text",
            marker={"size": 5, "color": [r["threshold"] for r in rows], "colorscale": "Viridis",
                    "colorbar": {"title": "threshold"}, "showscale": True},
        )
    )
    if chosen is not None:
        fig.add_trace(
            go.Scatter(
                x=[chosen["relative_flops"]],
                y=[chosen["accuracy"]],
                mode="markers",
                name="trial's thresholds",
                marker={"size": 14, "symbol": "star", "color": "crimson"},
                hovertext=[f"trial's thresholds<br>accuracy {chosen['accuracy']:.4f}<br>"
                           f"avg exit depth {chosen['avg_exit_depth']:.3f}<br>"
                           f"relative FLOPs {chosen['relative_flops']:.3f}"],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="relative FLOPs (1 = backbone + final head)",
        yaxis_title="validation accuracy",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def html_text(fig: go.Figure) -> str:
    """Self-contained HTML (plotly.js inlined): opens offline and inside the MLflow artifact viewer."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


def write_html(fig: go.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_text(fig), encoding="utf-8")
