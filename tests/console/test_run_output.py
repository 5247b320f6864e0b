"""What `ee-search run` prints, end to end as a user sees it: the real command in a subprocess on the
tiny study, piped to a file (one plain line per epoch trained, counted against the epochs in the
Optuna storage, and not one control character), in a pseudo-terminal (the live area), and --quiet.
The three runs add trials to one study, as a user re-running the command does. Marked slow: each is
a process of its own (about 20 s on 2 cores); tests/console/test_progress.py is the fast loop's."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import TINY_STUDY

EE_SEARCH = str(Path(sys.executable).with_name("ee-search"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n: ANSI escapes, \r, bells
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.slow
SMALL = ("--set", "data.train_subset=256")  # what is printed is the point, not how much each epoch learns


def _env() -> dict[str, str]:
    """No inherited colour or terminal overrides, so each run sees only its own output device; wide
    columns so the pseudo-terminal's lines are not cut (its size is otherwise 80 columns)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "TERM")}
    return env | {"COLUMNS": "220", "TERM": "xterm-256color"}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("progress")
    (directory / "tiny.yaml").write_text(TINY_STUDY)
    return directory


def _trials(directory: Path) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{directory}/optuna.db")
    return {t.number: t for t in study.get_trials()}


def _existing(directory: Path) -> int:
    return len(_trials(directory)) if (directory / "optuna.db").exists() else 0


def _run(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EE_SEARCH, "run", "tiny.yaml", *args], cwd=directory, env=_env(),
                          capture_output=True, text=True, timeout=240)


def test_piped_run_prints_one_plain_line_per_epoch_and_no_control_characters(study_dir):
    assert _existing(study_dir) == 0  # first in this module: the study is new
    ran = _run(study_dir, "--n-trials", "2", "--set", "train.max_epochs=3", *SMALL)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for stream in (ran.stdout, ran.stderr):  # no ANSI styles, no \r-redrawn progress bar (tqdm, MLflow, ...)
        assert not CONTROL.search(stream), repr(CONTROL.search(stream).group())
        assert "it/s]" not in stream and "%|" not in stream
    lines = ran.stdout.splitlines()
    epoch_lines = [line for line in lines if re.match(r"trial +\d+  epoch \d+/\d+  ", line)]
    trials = _trials(study_dir)
    assert sorted(trials) == [0, 1]
    for number, trial in trials.items():
        mine = [line for line in epoch_lines if line.startswith(f"trial {number:>3}  epoch ")]
        epochs = trial.user_attrs["epochs_trained"]
        assert epochs >= 1
        assert [re.search(r"epoch (\d+)/3", line).group(1) for line in mine] == [str(e) for e in range(1, epochs + 1)]
        assert all("val_loss " in line and "val_accuracy " in line and re.search(r"\d\.\ds$", line) for line in mine)
        # its finished-trial line comes after its last epoch line
        finished = next(i for i, line in enumerate(lines) if re.match(rf"trial +{number}  COMPLETE", line))
        assert finished > lines.index(mine[-1])
    assert len(epoch_lines) == sum(t.user_attrs["epochs_trained"] for t in trials.values())
    assert any(re.match(r"tiny  2/2 trials  0 pruned  0 failed  0 running", line) for line in lines)
    assert "tiny: 2 trial(s) this run (2 complete, 0 pruned, 0 failed)" in ran.stdout


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a pseudo-terminal")
def test_run_in_a_terminal_shows_the_live_area(study_dir):
    before = _existing(study_dir)  # the trials of the tests before (none when this one runs alone)
    command = shlex.join([EE_SEARCH, "run", "tiny.yaml", "--n-trials", str(before + 1), "--set", "train.max_epochs=3",
                           *SMALL])
    ran = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=study_dir, env=_env(),
                         capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = ran.stdout
    assert "\x1b[?25l" in out and "\x1b[1A" in out  # the cursor hidden and moved up: a Live area redrawn
    text = ANSI.sub("", out).replace("\r", "")
    trial = _trials(study_dir)[before]
    # The study line while the new trial ran, and its live trial line.
    assert re.search(rf"tiny  {before}/{before + 1} trials  0 pruned  0 failed  1 running  elapsed \d+m\d\ds  ETA ",
                     text), text
    assert re.search(rf"trial {before:>3}  epoch 1/3  val_loss \d\.\d{{4}} \(best\)", text), text
    assert re.search(rf"trial {before:>3}  COMPLETE  accuracy", text)
    assert "tiny: 1 trial(s) this run" in text
    # The last epoch it trained was on screen.
    assert f"trial {before:>3}  epoch {trial.user_attrs['epochs_trained']}/3" in text


def test_quiet_run_prints_only_the_summary(study_dir):
    before = _existing(study_dir)
    ran = _run(study_dir, "--n-trials", str(before + 1), "--set", "train.max_epochs=3", *SMALL, "--quiet")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert _trials(study_dir)[before].state.name == "COMPLETE"  # it did run a trial
    lines = [line for line in ran.stdout.splitlines() if line.strip()]
    assert re.fullmatch(rf"tiny: 1 trial\(s\) this run \(1 complete, 0 pruned, 0 failed\) in \d+m\d\ds; "
                        rf"{before + 1} in the study\.", lines[0]), lines[0]
    assert not any(re.match(r"trial +\d", line) or "epoch" in line or "running" in line for line in lines)
    assert "Next:" in lines[-1] and "branchy_lenet on digits" not in ran.stdout  # no header either
    assert not CONTROL.search(ran.stderr) and not re.search(r"trial +\d|epoch \d", ran.stderr)


def test_over_an_mlflow_server_the_output_is_only_ours(tmp_path, serve):
    """An HTTP tracking store is where MLflow prints on its own (run links on stdout, artifact
    progress bars): piped, every line is one of ours."""
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    url = serve(lambda port: [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
                              f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "artifacts"),
                              "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])
    ran = _run(tmp_path, "--n-trials", "2", "--set", "train.max_epochs=2", *SMALL, "--tracking-uri", url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert not CONTROL.search(ran.stdout + ran.stderr)
    progress = ran.stdout.split("\ntiny: 2 trial(s) this run", 1)[0].splitlines()
    ours = re.compile(r"tiny: branchy_lenet on digits |trial +\d+  (epoch \d+/2|COMPLETE|PRUNED|FAIL)  |tiny  \d+/2 trials  ")
    assert [line for line in progress if not ours.match(line)] == []
    assert len([line for line in progress if re.match(r"trial +\d+  epoch", line)]) == sum(
        t.user_attrs["epochs_trained"] for t in _trials(tmp_path).values())
    assert "View run" not in ran.stdout + ran.stderr
    # Each trial's network is a LoggedModel on the server, its weights uploaded through it (issue 18).
    from mlflow import MlflowClient

    from tests.test_tracking_models import assert_one_model_per_completed_trial

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/optuna.db")
    for model in assert_one_model_per_completed_trial(MlflowClient(url), study):
        assert list((tmp_path / "artifacts").rglob(f"{model.model_id}/artifacts/best.pt"))
