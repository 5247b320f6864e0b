"""The parent run's study figures: the hypervolume history against Optuna's own, Optuna's plots per
objective, and the refresh after each trial in a real run."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from ee_search.search.study_figures import hypervolume_history, optuna_figures, study_figures


def _study(seed: int) -> optuna.Study:
    """Trials of an accuracy (max) / avg_exit_depth (min) study as ee-search stores them: the sampled
    point as values and user attributes, the trial's own curve as operating points."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name=f"demo{seed}")
    study.set_metric_names(["accuracy", "avg_exit_depth"])
    dist = {"train.lr": FloatDistribution(0.001, 0.1, log=True)}
    for number in range(8):
        if number == 3:
            study.add_trial(create_trial(state=TrialState.PRUNED, params={"train.lr": 0.01}, distributions=dist))
            continue
        acc, depth = float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.4, 1.0))
        curve = [[[float(t)], float(acc - 0.1 * t), float(depth - 0.2 * t), None] for t in rng.uniform(0, 1, 4)]
        study.add_trial(create_trial(values=[acc, depth], params={"train.lr": float(rng.uniform(0.001, 0.1))},
                                     distributions=dist,
                                     user_attrs={"accuracy": acc, "avg_exit_depth": depth, "operating_points": curve}))
    return study


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_hypervolume_history_matches_optunas(seed):
    study = _study(seed)
    _, numbers, dense_hv, sampled_hv = hypervolume_history(study)
    theirs = optuna.visualization.plot_hypervolume_history(study, reference_point=[0.0, 1.0])
    by_trial = dict(zip(theirs.data[0].x, theirs.data[0].y))
    assert numbers == [t.number for t in study.trials if t.state == TrialState.COMPLETE]
    assert sampled_hv == pytest.approx([by_trial[n] for n in numbers], rel=1e-12)
    assert all(d >= s - 1e-12 for d, s in zip(dense_hv, sampled_hv))  # more points, never a smaller front
    assert dense_hv == sorted(dense_hv)  # a front only grows as trials are added


def test_optuna_plots_are_made_per_objective_as_html_and_png():
    files = optuna_figures(_study(0))
    for kind in ("optimization_history", "param_importances", "parallel_coordinate"):
        for objective in ("accuracy", "avg_exit_depth"):
            assert files[f"{kind}_{objective}.png"][:4] == b"\x89PNG"
            assert objective in files[f"{kind}_{objective}.html"]
    folders = study_figures(_study(1))
    assert set(folders["pareto"]) == {"pareto.csv", "pareto.json", "pareto.html", "pareto.png"}
    assert {"hypervolume_history.html", "hypervolume_history.png"} <= set(folders["figures"])


def test_a_study_with_one_trial_gets_the_figures_optuna_can_make():
    study = optuna.create_study(direction="maximize", study_name="one")
    study.set_metric_names(["curve_hypervolume"])
    study.add_trial(create_trial(value=0.4, params={}, distributions={},
                                 user_attrs={"accuracy": 0.5, "avg_exit_depth": 0.7}))
    files = optuna_figures(study)  # importances need two trials and a parameter: left out, no error
    assert "optimization_history_curve_hypervolume.png" in files
    assert "param_importances_curve_hypervolume.png" not in files
