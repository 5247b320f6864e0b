"""The study's own figures on its parent MLflow run, refreshed after every finished trial.

`figures/` holds, each as an interactive HTML and a PNG (ee_search.figures):
- `hypervolume_history`: the hypervolume of the dense front (every trial's operating points) and of
  the sampled front (trials at their own thresholds) after each completed trial, accuracy vs
  average exit depth from the reference (0, 1); the number the study is really improving;
- `optimization_history_<objective>`, `param_importances_<objective>` (PED-ANOVA: fast, and made
  for "which parameters matter for the good trials") and `parallel_coordinate_<objective>`: Optuna's
  own plots, one per objective (they take one target each);
- `plotly.min.js`, once, so that a downloaded `figures/` folder is interactive offline.
`pareto/` holds the dense front itself (`pareto.csv`, `.html`, `.png`), as `ee-search pareto` writes it.

Optuna draws the PNGs with its matplotlib twins of the same plots. pyplot keeps global state, and
trials running in threads (search.n_jobs) finish concurrently, so one lock serialises the drawing.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ee_search.figures import PLOTLY_JS, figure_files, html_text, plotly_js
from ee_search.pareto import (
    FrontPoint,
    collect_operating_points,
    collect_points,
    front_files,
    front_hypervolume,
    hypervolume,
)
from ee_search.records import state_counts
from ee_search.search.describe import describe_study

logger = logging.getLogger(__name__)
_DRAWING = threading.Lock()


def hypervolume_history(study: optuna.Study, dense: list[FrontPoint] | None = None,
                        sampled: list[FrontPoint] | None = None):
    """Dense- and sampled-front hypervolume after each completed trial (in trial-number order).
    `dense` and `sampled` are the study's points when the caller has them already."""
    import plotly.graph_objects as go

    dense = collect_operating_points(study) if dense is None else dense
    sampled = collect_points(study) if sampled is None else sampled
    numbers = sorted({p.trial_number for p in sampled})
    # The front of the trials up to n, not the final front's flags: `hypervolume` ignores dominated points.
    dense_hv = [hypervolume([(p.accuracy, p.avg_exit_depth) for p in dense if p.trial_number <= n]) for n in numbers]
    sampled_hv = [hypervolume([(p.accuracy, p.avg_exit_depth) for p in sampled if p.trial_number <= n])
                  for n in numbers]
    fig = go.Figure()
    if dense:
        fig.add_trace(go.Scatter(x=numbers, y=dense_hv, mode="lines+markers", name="dense front",
                                 line={"color": "crimson"}, marker={"size": 6, "color": "crimson"}))
    fig.add_trace(go.Scatter(x=numbers, y=sampled_hv, mode="lines+markers", name="trials at their sampled thresholds",
                             line={"color": "lightslategray"}, marker={"size": 6, "color": "lightslategray"}))
    fig.update_layout(title=f"{study.study_name}: hypervolume of accuracy vs average exit depth after each trial",
                      xaxis_title="trial number (completed trials)", yaxis_title="hypervolume (reference 0, 1)",
                      template="plotly_white")
    return fig, numbers, dense_hv, sampled_hv


def _matplotlib_png(draw: Callable[[], object]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        # "experimental" (the matplotlib twins), and PED-ANOVA's note on directions, handled by `target`.
        warnings.simplefilter("ignore")
        axes = draw()
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(9, 5.6)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def _comparable(study: optuna.Study) -> bool:
    """Importances and parallel coordinates compare parameters across trials: they need two completed
    trials and a searched parameter (Optuna would draw an empty figure)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return len(done) >= 2 and any(t.params for t in done)


def optuna_figures(study: optuna.Study) -> dict[str, str | bytes]:
    """Optuna's plots (plotly for the HTML, its matplotlib twin for the PNG), one per objective.
    A plot Optuna cannot make yet (one trial, no varying parameter) is left out until it can."""
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    files: dict[str, str | bytes] = {}
    for index, name in enumerate(names):
        target = (lambda t, i=index: t.values[i]) if len(names) > 1 else None
        # PED-ANOVA ranks parameters by how they reach *low* target values: negate what is maximised.
        sign = -1.0 if study.directions[index] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        plots = {
            "optimization_history": (vis.plot_optimization_history, vis_mpl.plot_optimization_history, {}),
            "param_importances": (vis.plot_param_importances, vis_mpl.plot_param_importances,
                                  {"evaluator": optuna.importance.PedAnovaImportanceEvaluator(),
                                   "target": lambda t, i=index, s=sign: s * t.values[i]}),
            "parallel_coordinate": (vis.plot_parallel_coordinate, vis_mpl.plot_parallel_coordinate, {}),
        }
        if not _comparable(study):
            plots = {"optimization_history": plots["optimization_history"]}
        for kind, (plotly_plot, mpl_plot, extra) in plots.items():
            kwargs = {"target": target, "target_name": name, **extra}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fig = plotly_plot(study, **kwargs)
                png = _matplotlib_png(lambda: mpl_plot(study, **kwargs))
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                logger.debug("no %s figure yet: %s", kind, exc)
                continue
            stem = f"{kind}_{name}"
            files[f"{stem}.html"] = html_text(fig, png)
            files[f"{stem}.png"] = png
    return files


def study_figures(study: optuna.Study, dense: list[FrontPoint] | None = None,
                  sampled: list[FrontPoint] | None = None) -> dict[str, dict[str, str | bytes]]:
    """Every file of the parent run's `figures/` and `pareto/` folders, by folder and file name."""
    dense = collect_operating_points(study) if dense is None else dense
    sampled = collect_points(study) if sampled is None else sampled
    with _DRAWING:
        fig, *_ = hypervolume_history(study, dense, sampled)
        figures = figure_files(fig, "hypervolume_history") | optuna_figures(study)
        pareto = front_files(dense, study.study_name, "dense", sampled) if dense else {}
    return {"figures": figures, "pareto": pareto}


def refresh_study_figures(tracker, parent_run_id: str, study: optuna.Study, trial: FrozenTrial,
                          target: int | None = None) -> None:
    """Rewrite the parent run's description and figures after a finished trial (`tracker`: the
    study's tracking.StudyTracker). A figure is never worth a trial: a failure here is logged as a
    warning and the study goes on."""
    from ee_search.tracking import log_files

    if tracker.in_outage():
        return  # the server is away (the spool holds the trials' writes): redrawn after the next trial
    client = tracker.client
    dense: list[FrontPoint] = []
    try:
        counts = state_counts(study.get_trials(deepcopy=False))
        dense = collect_operating_points(study)
        best = [p for p in dense if p.on_front]
        tracker.describe(parent_run_id, describe_study(
            study.study_name, counts, target, len(best), len({p.trial_number for p in best}),
            front_hypervolume(dense) if dense else None))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.warning("could not describe the study on run %s: %s", parent_run_id, exc)
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return
    try:
        folders = study_figures(study, dense or None)  # None: collected again if describing failed
        if PLOTLY_JS not in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(parent_run_id, "figures")}:
            folders["figures"][PLOTLY_JS] = plotly_js()
        for folder, files in folders.items():
            if files:
                log_files(client, parent_run_id, files, folder)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.warning("could not refresh the study's figures on run %s: %s", parent_run_id, exc)
