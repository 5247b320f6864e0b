"""The front as data, checked against Optuna's own `study.best_trials`, a brute-force dominance check,
and a hand-computed hypervolume; then the three files."""

from __future__ import annotations

import csv
import json

import numpy as np
import optuna
import pytest

from ee_search.pareto import (
    collect_operating_points,
    collect_points,
    front,
    hypervolume,
    nondominated,
    write_front,
)


def _study_with_points(points):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, (acc, depth) in enumerate(points):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, depth],
            params={"x": float(i)},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1000)},
            user_attrs={"accuracy": acc, "avg_exit_depth": depth, "relative_flops": depth * 1.1,
                        "thresholds": [0.5], "mlflow_run_id": f"run{i}"},
        ))
    return study


@pytest.mark.parametrize("seed", range(5))
def test_front_equals_optuna_best_trials(seed):
    rng = np.random.default_rng(seed)
    # Coarse grid values so ties and exact duplicates occur, the cases that are easy to get wrong.
    depth = rng.integers(1, 9, 80) / 8
    # Deeper exits buy accuracy, as in a real study, so the front holds several points.
    acc = np.clip(np.round((0.9 * depth + rng.normal(0, 0.08, 80)) * 12) / 12, 0, 1)
    study = _study_with_points(list(zip(acc.tolist(), depth.tolist())))
    ours = {p.trial_number for p in collect_points(study) if p.on_front}
    assert ours == {t.number for t in study.best_trials}
    assert len(ours) >= 2


def test_nondominated_brute_force_and_duplicates():
    values = np.array([[0.9, 0.5], [0.9, 0.5], [0.8, 0.3], [0.7, 0.4], [0.95, 0.9], [0.8, 0.3]])
    mask = nondominated(values, [True, False])
    # [0.7, 0.4] is beaten by [0.8, 0.3]; duplicates stay together
    assert mask.tolist() == [True, True, True, False, True, True]
    with pytest.raises(ValueError):
        nondominated(values, [True])


def test_hypervolume_hand_computed():
    # Rectangles to (accuracy 0, depth 1): 0.9 x 0.5 and 0.8 x 0.7 overlap in 0.8 x 0.5.
    assert hypervolume([(0.9, 0.5), (0.8, 0.3)]) == pytest.approx(0.45 + 0.56 - 0.40)
    assert hypervolume([(0.9, 0.5), (0.8, 0.3), (0.5, 0.6)]) == pytest.approx(0.61)  # dominated adds 0
    assert hypervolume([]) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_equals_optunas_public_hypervolume_history(seed):
    """Oracle: the last point of Optuna's own hypervolume-history plot (its public API) for the same
    points, directions (maximize accuracy, minimize depth) and reference point."""
    import warnings

    rng = np.random.default_rng(seed)
    points = [(float(a), float(d)) for a, d in zip(rng.random(30), rng.random(30))]
    points += [points[0], (0.0, 0.5), (0.5, 1.0)]  # a duplicate, and two points on the reference's edges
    study = optuna.create_study(directions=["maximize", "minimize"])
    for acc, depth in points:
        study.add_trial(optuna.trial.create_trial(values=[acc, depth]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plot_hypervolume_history is marked experimental
        figure = optuna.visualization.plot_hypervolume_history(study, reference_point=[0.0, 1.0])
    assert hypervolume(points) == pytest.approx(figure.data[0].y[-1], rel=1e-12)


def test_files_hold_exactly_the_front(tmp_path):
    study = _study_with_points([(0.9, 0.5), (0.8, 0.3), (0.7, 0.4), (0.95, 0.9)])
    points = collect_points(study)
    paths = write_front(points, tmp_path / "out", "demo", kind="sampled")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [int(r["trial_number"]) for r in rows] == [1, 0, 3]  # shallowest first
    assert rows[0]["mlflow_run_id"] == "run1" and json.loads(rows[0]["params"]) == {"x": 1.0}
    doc = json.loads(paths["json"].read_text())
    assert doc["n_completed_trials"] == 4 and [p["trial_number"] for p in doc["front"]] == [1, 0, 3]
    assert doc["front"][0]["thresholds"] == [0.5] and doc["front"][0]["relative_flops"] == pytest.approx(0.33)
    html = paths["html"].read_text()
    assert "plotly" in html and "Pareto front" in html and "trial 2" in html  # all trials, front highlighted
    assert [p.trial_number for p in front(points)] == [1, 0, 3]


def _study_with_curves(curves):
    """Trials whose own operating points are given: {trial: [(thresholds, accuracy, depth, flops)]}."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, curve in enumerate(curves):
        sampled = curve[len(curve) // 2]
        study.add_trial(optuna.trial.create_trial(
            values=[sampled[1], sampled[2]], params={"x": float(i)},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1000)},
            user_attrs={"accuracy": sampled[1], "avg_exit_depth": sampled[2], "relative_flops": sampled[3],
                        "thresholds": sampled[0], "mlflow_run_id": f"run{i}",
                        "operating_points": [[list(t), a, d, f] for t, a, d, f in curve]},
        ))
    return study


def test_dense_front_is_the_nondominated_union_of_the_trials_curves(tmp_path):
    """Oracle: the brute-force dominance check over every operating point of every trial."""
    rng = np.random.default_rng(0)
    curves = []
    for _ in range(6):
        depth = np.sort(rng.integers(1, 25, 15) / 24)
        acc = np.round(np.maximum.accumulate(rng.uniform(0.3, 0.95, 15)) * 20) / 20  # ties across trials
        curves.append([([float(t)], float(a), float(d), float(d) * 0.9) for t, a, d in zip(rng.random(15), acc, depth)])
    study = _study_with_curves(curves)
    points = collect_operating_points(study)
    assert len(points) == 6 * 15
    on = [p for p in points if p.on_front]
    values = np.array([[p.accuracy, p.avg_exit_depth] for p in points])
    mask = nondominated(values, [True, False])
    # Every non-dominated (accuracy, depth) is on the front exactly once; nothing dominated is.
    assert {(p.accuracy, p.avg_exit_depth) for p in on} == {tuple(v) for v in values[mask]}
    assert len(on) == len({(p.accuracy, p.avg_exit_depth) for p in on})
    # Every trial's sampled point is dominated by or equal to a front row.
    for sampled in collect_points(study):
        assert any(p.accuracy >= sampled.accuracy and p.avg_exit_depth <= sampled.avg_exit_depth for p in on)
    paths = write_front(points, tmp_path, "demo", "dense", collect_points(study))
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(on)
    assert [float(r["avg_exit_depth"]) for r in rows] == sorted(float(r["avg_exit_depth"]) for r in rows)
    assert set(rows[0]) >= {"trial_number", "thresholds", "accuracy", "avg_exit_depth", "relative_flops", "mlflow_run_id"}
    doc = json.loads(paths["json"].read_text())
    assert doc["front_kind"] == "dense" and doc["hypervolume"] == pytest.approx(
        hypervolume([(p.accuracy, p.avg_exit_depth) for p in points]))
    html = paths["html"].read_text()
    assert "dense front" in html and "trial 5 curve" in html and "sampled thresholds" in html


def test_a_front_point_without_test_numbers_leaves_its_test_cells_empty_wherever_it_sorts(tmp_path):
    """`pareto --split test` skips a trial whose best.pt cannot be read: its rows have no test_* values,
    and the others keep theirs, even when the skipped trial's row comes first."""
    points = collect_points(_study_with_points([(0.9, 0.5), (0.8, 0.3), (0.95, 0.9)]))
    for p in front(points):
        if p.trial_number != 1:  # trial 1 is the shallowest: the first row
            p.test = {"accuracy": p.accuracy - 0.01, "avg_exit_depth": p.avg_exit_depth}
    rows = list(csv.DictReader(write_front(points, tmp_path, "demo", kind="sampled")["csv"].open()))
    assert [(r["trial_number"], r["test_accuracy"]) for r in rows] == [("1", ""), ("0", "0.89"), ("2", "0.94")]
