"""End to end through the command line, on tiny data (seconds): a study on digits with BranchyNet's
LeNet, the entropy criterion and a random sampler (none of which the quickstart uses) must leave
everything docs/design.md §5 lists in real Optuna and MLflow SQLite stores; `pareto` must export exactly
the non-dominated completed trials; mistakes exit 2 and create nothing."""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import optuna
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import Result

from ee_search.config import load_study_file
from ee_search.data import build_batches, prepare_data
from ee_search.exits import exit_costs
from ee_search.records import VAL_LOGITS, load_val_logits
from ee_search.search.space import values_from_params
from ee_search.train.checkpoint_files import UNREADABLE
from tests.conftest import TINY_STUDY, best_model, cli, download_best, mlflow_client, run_study


class Ran(NamedTuple):
    dir: Path  # holds optuna.db, mlflow.db and the artifacts; the working directory while it lives
    study: Path
    result: Result

    def optuna_study(self) -> optuna.Study:
        return optuna.load_study(study_name="tiny", storage=f"sqlite:///{self.dir}/optuna.db")

    def mlflow(self) -> MlflowClient:
        return mlflow_client(self.dir)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The tiny study run once (3 trials) for the whole module, in a directory of its own that stays the
    working directory (where the default stores resolve) until the module's last test. The tests only
    read it: a test that adds trials runs a study of its own."""
    directory = tmp_path_factory.mktemp("ran")
    study = directory / "tiny.yaml"
    study.write_text(TINY_STUDY)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        # After its 2 epochs the network's exit-1 entropies sit between 2.2 and 2.3 nats (ln 10 = 2.30):
        # thresholds drawn there send part of the samples out early, so exit decisions matter.
        result = cli("run", study, "--set", "search.n_trials=3",
                        "--set", "search.space.exits.thresholds={type: float, low: 2.2, high: 2.31, per_item: true}")
        assert result.exit_code == 0, result.output
        yield Ran(directory, study, result)


def test_run_leaves_the_contract_in_optuna_and_mlflow(ran, tmp_path):
    result = ran.result
    assert "Pareto front" in result.output and "trial   2" in result.output
    study = ran.optuna_study()
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    client = ran.mlflow()
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    for trial in trials:
        assert len(trial.values) == 2
        attrs = trial.user_attrs
        assert attrs["stop_reason"] in ("max_epochs", "patience_exhausted")
        assert attrs["epochs_trained"] in (1, 2)
        run = client.get_run(attrs["mlflow_run_id"])
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["ee_search.trial_number"] == str(trial.number)
        assert tags["optuna.trial_state"] == "COMPLETE" and run.info.status == "FINISHED"
        params = run.data.params
        assert float(params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        assert params["model.name"] == "branchy_lenet" and params["exits.criterion"] == "entropy"
        assert json.loads(params["exits.thresholds"]) == pytest.approx([trial.params["exits.thresholds.0"]])
        metrics = run.data.metrics
        assert metrics["accuracy"] == pytest.approx(trial.values[0])
        assert metrics["avg_exit_depth"] == pytest.approx(trial.values[1])
        assert 0 < metrics["relative_flops"] < 1.5
        for name in ("train_loss", "val_loss", "val_accuracy", "val_accuracy_exit_1", "val_accuracy_exit_2", "lr", "epoch_seconds"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert steps == list(range(1, attrs["epochs_trained"] + 1)), name
        files = {f.path for d in ("checkpoints", "exits", "config") for f in client.list_artifacts(run.info.run_id, d)}
        assert files == {"checkpoints/best.pt", "exits/tradeoff.csv", "exits/tradeoff.html", "exits/tradeoff.png", "exits/val_logits.pt",
                         "config/trial.yaml"}
    # The checkpoint rebuilds the model without unpickling code.
    model = best_model(client, trials[0], tmp_path)
    assert len(model(torch.zeros(2, 1, 28, 28))) == 2
    curve = client.download_artifacts(trials[0].user_attrs["mlflow_run_id"], "exits/tradeoff.csv", str(tmp_path))
    with open(curve) as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) >= {"kind", "thresholds", "accuracy", "avg_exit_depth", "relative_flops"}
    assert sum(r["kind"] == "shared" for r in rows) == 101 and any(r["kind"] == "per_exit" for r in rows)


def _test_split_by_hand(ran: Ran, trial: optuna.trial.FrozenTrial, tmp_path: Path) -> dict[str, float]:
    """The trial's best checkpoint, fetched from its MLflow run and run over the held-out test split here;
    accuracy at the exit taken, avg exit depth and relative FLOPs at the trial's thresholds, by hand."""
    payload = download_best(ran.mlflow(), trial, tmp_path)
    model = best_model(ran.mlflow(), trial, tmp_path).to(memory_format=torch.channels_last)
    loaded = load_study_file(ran.study)
    config = loaded.with_values(values_from_params(loaded.config, trial.params))
    data = build_batches(prepare_data(config.data, config.seed), config.data.augment, torch.device("cpu"),
                         config.train.batch_size, config.train.eval_batch_size, seed=0, channels_last=True)
    with torch.no_grad():
        batches = [(model(x), y) for x, y in data.test]
    exits = len(batches[0][0])
    logits = [torch.cat([out[k] for out, _ in batches]).float() for k in range(exits)]
    labels = torch.cat([y for _, y in batches]).tolist()
    criterion = payload["metadata"]["criterion"]
    # Exit decisions compare float32 scores with float32 thresholds.
    thresholds = [float(torch.tensor(t, dtype=torch.float32)) for t in trial.user_attrs["thresholds"]]
    assert len(thresholds) == exits - 1
    if criterion == "max_softmax":
        scores = [torch.softmax(z, dim=-1).amax(dim=-1).tolist() for z in logits[:-1]]
    else:
        log_p = [torch.log_softmax(z, dim=-1) for z in logits[:-1]]
        scores = [(-(lp.exp() * lp).sum(dim=-1)).tolist() for lp in log_p]  # entropy in nats
    predictions = [z.argmax(dim=-1).tolist() for z in logits]
    costs = exit_costs(model, (data.channels, data.input_size, data.input_size)).relative
    right = depth = flops = 0.0
    for i, label in enumerate(labels):
        k = exits
        for j, t in enumerate(thresholds):
            if (scores[j][i] >= t) if criterion == "max_softmax" else (scores[j][i] <= t):
                k = j + 1
                break
        right += predictions[k - 1][i] == label
        depth += k / exits
        flops += costs[k - 1]
    n = len(labels)
    assert n == len(data.test.labels) and n != len(data.val.labels)  # the splits cannot be mistaken
    return {"accuracy": right / n, "avg_exit_depth": depth / n, "relative_flops": flops / n}


def test_pareto_exports_exactly_the_nondominated_trials(ran, tmp_path):
    """Oracle: Optuna's best_trials for the front, and for `--split test` each front trial's checkpoint
    evaluated on the test split by hand in this test."""
    out = tmp_path / "front"
    result = cli("pareto", ran.study, "--out", out, "--front", "sampled", "--split", "test")
    assert result.exit_code == 0, result.output
    study = ran.optuna_study()
    expected = {t.number for t in study.best_trials}
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert {int(r["trial_number"]) for r in rows} == expected
    early = False
    for row in rows:
        trial = study.trials[int(row["trial_number"])]
        assert float(row["accuracy"]) == pytest.approx(trial.values[0])
        assert row["mlflow_run_id"] == trial.user_attrs["mlflow_run_id"]
        assert json.loads(row["params"]) == pytest.approx(trial.params)
        assert json.loads(row["thresholds"]) == pytest.approx(trial.user_attrs["thresholds"])
        by_hand = _test_split_by_hand(ran, trial, tmp_path / str(trial.number))
        assert float(row["test_accuracy"]) == pytest.approx(by_hand["accuracy"], abs=1e-12)
        assert float(row["test_avg_exit_depth"]) == pytest.approx(by_hand["avg_exit_depth"], abs=1e-12)
        if row.get("test_relative_flops"):
            assert float(row["test_relative_flops"]) == pytest.approx(by_hand["relative_flops"], rel=1e-9)
        early |= by_hand["avg_exit_depth"] < 1.0
    assert early, "some test sample must leave early, or the thresholds would not matter"
    doc = json.loads((out / "pareto.json").read_text())
    assert {p["trial_number"] for p in doc["front"]} == expected
    page = (out / "pareto.html").read_text()
    assert len(page) < 1_000_000 and "plotly.min.js" in page  # loads the one copy written beside it
    assert (out / "plotly.min.js").stat().st_size > 1_000_000 and (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_latency_gives_every_row_its_expected_latency(ran, tmp_path):
    """`--latency cpu --batch 1,16`: each front row's latency_ms_b<B> is the model of docs/design.md §4
    worked by hand here from its trial's stage costs (in pareto.json) and its exit fractions, counted
    from the trial's val logits by the entropy rule; the accuracy-vs-latency fronts cover every row."""
    out = tmp_path / "front"
    result = cli("pareto", ran.study, "--out", out, "--latency", "cpu", "--batch", "16,1")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    document = json.loads((out / "pareto.json").read_text())
    latency = document["latency"]
    assert latency["device"] == "cpu" and latency["batches"] == [1, 16]
    assert set(latency["trials"]) == {r["trial_number"] for r in rows}
    study = ran.optuna_study()
    for row in rows:
        costs = latency["trials"][row["trial_number"]]
        assert costs["sizes"] == [1, 16] and len(costs["stage_ms"]) == 2
        with tempfile.TemporaryDirectory() as tmp:
            cached = load_val_logits(ran.mlflow().download_artifacts(
                study.trials[int(row["trial_number"])].user_attrs["mlflow_run_id"], VAL_LOGITS, tmp))
        log_p = torch.log_softmax(cached["logits"][0].float(), dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1)
        early = float((entropy <= torch.tensor(json.loads(row["thresholds"])[0], dtype=torch.float32)).double().mean())
        step = [[s + e for s, e in zip(costs["stage_ms"][k], costs["exit_ms"][k])] for k in range(2)]
        # batch 1: setup + stage 1 for everyone + stage 2 for those that did not leave at exit 1
        assert float(row["latency_ms_b1"]) == pytest.approx(costs["start_ms"][0] + step[0][0] + (1 - early) * step[1][0])
        # batch 16: stage 2 runs unless all 16 left, on 16 (1 - early) / P samples on average then
        p = 1 - early ** 16
        by_hand = costs["start_ms"][1] + step[0][1]
        if p > 0:
            n = 16 * (1 - early) / p
            by_hand += p * (step[1][0] + (step[1][1] - step[1][0]) * (n - 1) / 15)
        assert float(row["latency_ms_b16"]) == pytest.approx(by_hand)
    for column in ("latency_ms_b1", "latency_ms_b16"):
        fastest = latency["fronts"][column]
        assert fastest and [f["latency"][column] for f in fastest] == sorted(f["latency"][column] for f in fastest)
        for row in rows:  # every row is matched or beaten on both axes by a point of the latency front
            assert any(f["accuracy"] >= float(row["accuracy"]) and f["latency"][column] <= float(row[column]) * (1 + 1e-12)
                       for f in fastest)
    page = (out / "pareto.html").read_text()
    assert "latency front, batch 1 (cpu)" in page and "latency front, batch 16 (cpu)" in page
    assert "dense front, validation" in page  # the depth front stays, above them


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_pareto_latency_cuda_without_cuda_exits_2_with_one_line(ran, tmp_path):
    result = cli("pareto", ran.study, "--out", tmp_path / "front", "--latency", "cuda", catch_exceptions=True)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --latency: cuda was asked for but torch sees no CUDA device: use --latency cpu"]
    assert not (tmp_path / "front").exists()


@contextmanager
def _truncated(ran: Ran, trial_number: int, artifact: str):
    """The trial's `artifact` cut in half in the (local) artifact store while the block runs; best.pt
    also in the trial's LoggedModel, where export-model reads it first (docs/design.md §5)."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    attrs = ran.optuna_study().trials[trial_number].user_attrs
    paths = [Path(local_file_uri_to_path(ran.mlflow().get_run(attrs["mlflow_run_id"]).info.artifact_uri)) / artifact]
    if artifact.endswith("best.pt") and attrs.get("mlflow_model_id"):
        model = ran.mlflow().get_logged_model(attrs["mlflow_model_id"])
        paths.append(Path(local_file_uri_to_path(model.artifact_location)) / Path(artifact).name)
    wholes = [path.read_bytes() for path in paths]
    for path, whole in zip(paths, wholes):
        path.write_bytes(whole[: len(whole) // 2])
    try:
        yield
    finally:
        for path, whole in zip(paths, wholes):
            path.write_bytes(whole)  # the module's other tests read the study as it was made


@pytest.fixture
def quiet_downloads(monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as ee_search.cli.main sets it


def test_a_corrupt_best_pt_costs_pareto_one_warning_and_only_that_trials_test_numbers(ran, tmp_path,
                                                                                      quiet_downloads):
    from ee_search.pareto import collect_points
    from ee_search.pareto_export import add_test_metrics

    assert cli("pareto", ran.study, "--out", tmp_path / "val", "--front", "sampled").exit_code == 0
    bad = int(next(csv.DictReader((tmp_path / "val" / "pareto.csv").open()))["trial_number"])
    points, warned = collect_points(ran.optuna_study()), []  # every trial's, on the front or not
    with _truncated(ran, bad, "checkpoints/best.pt"):
        result = cli("pareto", ran.study, "--out", tmp_path / "test", "--front", "sampled", "--split", "test")
        add_test_metrics(load_study_file(ran.study), ran.optuna_study(), points, warned.append)
    assert result.exit_code == 0, result.output
    told = [line for line in result.output.splitlines() if "cannot be read" in line]
    assert len(told) == 1 and told[0].startswith(f"warning: trial {bad}: checkpoints/best.pt cannot be read: ")
    assert "weights_only" not in result.output and "Traceback" not in result.output
    rows = list(csv.DictReader((tmp_path / "test" / "pareto.csv").open()))
    assert rows and all(r.get("test_accuracy", "") == "" for r in rows if int(r["trial_number"]) == bad)
    # The other trials are unaffected: each gets its test numbers, the corrupt one is told once.
    assert len(points) == 3 and [p.trial_number for p in points if not p.test] == [bad]
    assert len(warned) == 1 and warned[0].startswith(f"trial {bad}: checkpoints/best.pt cannot be read")


@pytest.mark.parametrize("artifact", ["checkpoints/best.pt", "exits/val_logits.pt"])
def test_export_model_of_a_trial_with_a_corrupt_file_exits_2_with_one_line(ran, tmp_path, quiet_downloads, artifact):
    with _truncated(ran, 0, artifact):
        result = cli("export-model", ran.study, "--trial", 0, "--out", tmp_path / "model", catch_exceptions=True)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: trial 0: {artifact} cannot be read: {UNREADABLE}; export another trial of the front (ee-search pareto)"]
    assert not (tmp_path / "model").exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_status_lists_every_trial(ran):
    result = cli("status", ran.study)
    assert result.exit_code == 0
    assert "Study 'tiny': 3 trial(s)" in result.output
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    # trial, state, accuracy, avg_exit_depth, epochs, reason, run id: one row per trial, from its record.
    assert [(r[0], r[1], r[4], r[-1]) for r in rows] == [
        (str(t.number), t.state.name, str(t.user_attrs["epochs_trained"]), t.user_attrs["mlflow_run_id"])
        for t in ran.optuna_study().trials]


def test_validate_prints_the_space(tiny_study):
    result = cli("validate", tiny_study)
    assert result.exit_code == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines()
            if line.startswith("│")]
    # In sampling order; per_item over the one threshold of a 2-exit network.
    assert rows == [["train.lr", "float", "[0.01, 0.1] log", "", ""],
                    ["exits.thresholds", "float", "[0.1, 2.0]", "x1", ""]]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "missing.yaml"], "no such file"),
        (["run", "{study}", "--set", "train.lr=-1"], "train.lr"),
        (["run", "{study}", "--set", "model.name=nope"], "model.name"),
        (["run", "{study}", "--set", "exits.thresholds=[0.5, 0.5]"], "exits.thresholds"),
        (["run", "{study}", "--set", "search.space.train.lr={type: float, low: 1, high: 0}"], "low"),
        (["run", "{study}", "--set", "search.sampler.options={nope: 1}"], "search.sampler.options"),
        (["run", "{study}", "--storage", "nope://x"], "search.storage"),
        (["run", "{study}", "--tracking-uri", "bogus://x"], "tracking.uri"),
        (["run", "{study}", "--set", "data.dataset=svhn", "--set", "data.root=nowhere"], "train_32x32.mat"),
        (["status", "{study}"], "no study named"),
        (["pareto", "{study}", "--out", "front"], "no study named"),
        (["pareto", "{study}", "--out", "front", "--latency", "cpu", "--batch", "0"], "--batch: give batch sizes"),
        (["pareto", "{study}", "--out", "front", "--latency", "cpu", "--batch", "1,x"], "--batch: give batch sizes"),
        (["pareto", "{study}", "--out", "front", "--latency", "cpu", "--batch", ""], "--batch: give batch sizes"),
        (["pareto", "{study}", "--out", "front", "--batch", "8"], "--batch: only applies with --latency"),
        (["pareto", "{study}", "--out", "front", "--latency", "tpu"], "--latency: must be 'cpu' or 'cuda'"),
        (["validate", "{study}", "--set", "search.objectives=[accuracy, speed]"], "search.objectives"),
        (["validate", "{study}", "--set", "search.heartbeat={interval_s: 5, grace_period_s: 5}"], "grace_period_s"),
    ],
)
def test_mistakes_exit_2_with_one_line_and_create_nothing(tiny_study, workdir, args, words):
    before = sorted(p.name for p in workdir.iterdir())
    result = cli(*[a.replace("{study}", str(tiny_study)) for a in args], catch_exceptions=True)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert words in message and "Traceback" not in message
    assert sorted(p.name for p in workdir.iterdir()) == before  # no database, run or file


@pytest.mark.slow
def test_ui_serves_the_study_through_a_real_mlflow_server(ran, serve):
    """`ee-search ui` execs a real MLflow server over the study's store, bound to loopback; an HTTP
    client sees the experiment, the parent and trial runs and their artifacts."""
    # The server resolves the study's default sqlite:///mlflow.db in its working directory: ran.dir.
    base = serve(lambda port: [sys.executable, "-m", "ee_search.cli", "ui", str(ran.study), "--port", str(port)])
    with urllib.request.urlopen(f"{base}/", timeout=10) as response:
        assert response.status == 200 and "<html" in response.read().decode().lower()
    client = MlflowClient(base)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags["ee_search.role"] for r in runs)
    assert roles == ["study", "trial", "trial", "trial"]
    study = ran.optuna_study()
    served = {r.data.tags.get("ee_search.trial_number"): r.info.run_id for r in runs}
    for t in study.trials:
        assert served[str(t.number)] == t.user_attrs["mlflow_run_id"]
    exits = {f.path for f in client.list_artifacts(served["0"], "exits")}
    assert exits == {"exits/tradeoff.csv", "exits/tradeoff.html", "exits/tradeoff.png", "exits/val_logits.pt"}


def test_the_follow_up_commands_printed_find_the_same_study(tiny_study, workdir):
    result = cli("run", tiny_study, "--set", "name=renamed", "--set", "search.n_trials=1",
                    "--storage", "sqlite:///elsewhere.db")
    assert result.exit_code == 0, result.output
    hint = result.output.split("Next:", 1)[1]
    status_cmd = hint.split("ee-search status ", 1)[1].split()
    assert status_cmd == [str(tiny_study), "--set", "name=renamed", "--storage", "sqlite:///elsewhere.db"]
    status = cli("status", *status_cmd)
    assert status.exit_code == 0 and "COMPLETE" in status.output


def test_resume_runs_only_the_missing_trials_and_reuses_the_parent_run(tiny_study, workdir):
    run_study(tiny_study, "train.max_epochs=1", n_trials=1)
    result = cli("run", tiny_study, "--n-trials", "2", "--set", "train.max_epochs=1")
    assert result.exit_code == 0, result.output
    assert "1 trial(s) this run" in result.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert len(study.trials) == 2
    client = mlflow_client(workdir)
    experiment = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'study'")) == 1
    assert len(client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'trial'")) == 2
    again = cli("run", tiny_study, "--n-trials", "2", "--set", "train.max_epochs=1")
    assert again.exit_code == 0 and "0 trial(s) this run" in again.output


def test_ui_prints_the_link_to_the_experiments_runs_table(ran, monkeypatch):
    """MLflow 3 opens an experiment on its GenAI screens unless the link asks for "Model training"."""
    execs = []

    def exec_instead(path, argv):
        execs.append(argv)
        raise SystemExit(0)

    monkeypatch.chdir(ran.dir)
    monkeypatch.setattr("os.execv", exec_instead)
    result = cli("ui", ran.study, "--port", "5055", catch_exceptions=True)
    assert result.exit_code == 0, result.output
    experiment = ran.mlflow().get_experiment_by_name("tiny")
    assert f"open http://127.0.0.1:5055/#/experiments/{experiment.experiment_id}?workflowType=machine_learning" \
        in result.output
    assert execs and execs[0][1:3] == ["ui", "--backend-store-uri"] and execs[0][-4:] == ["--host", "127.0.0.1",
                                                                                         "--port", "5055"]


def test_an_error_message_is_printed_as_text_not_as_rich_markup(capsys):
    import typer

    from ee_search import cli
    from ee_search.errors import UserInputError

    with pytest.raises(typer.Exit) as stopped:
        cli._fail(UserInputError("s.yaml", "search.storage", "run pip install 'ee-search[postgres]'"))
    assert stopped.value.exit_code == 2
    assert "pip install 'ee-search[postgres]'" in capsys.readouterr().err
