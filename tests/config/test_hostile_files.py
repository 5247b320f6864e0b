"""Hostile and oversized study files (issue 19, part 5): an alias bomb, deep nesting, a 50 MB name, an
oversized `--set` value. Each is refused by the real command, in a process of its own, with one line of
at most 300 characters naming the file and the field, exit code 2, no traceback, within bounded memory,
and with nothing created. The limits themselves are `ee_search/config/safe_yaml.py`'s."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import ee_search
from tests.conftest import TINY_STUDY, cli

MAX_LINE = 300
MAX_PEAK_MB = 500
# The command's own start (imports) included; the issue asks for 5 s on an idle machine, and the suite
# shares 2 cores with other tests, so the test allows more and the report gives the measured times.
MAX_SECONDS = 30
# A run without the fixes expands the bomb until it has no memory left: the child is capped, so that
# such a run fails quickly instead of taking the machine down with it.
_CHILD_MEMORY_CAP = 4 << 30

# Nine levels of nine aliases: 1.1 KB that stand for 9^9 (387 million) strings.
ALIAS_BOMB = TINY_STUDY.replace("model: {name: branchy_lenet, width: 64}", """\
model:
  name: "bomb_net:build"
  options:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]""")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float


# The child caps its own address space and, as it exits, writes its own peak RSS (VmHWM of its own
# memory map). os.wait4's ru_maxrss cannot be used: Linux carries the forking process's peak over
# exec, and a pytest worker that has imported torch would lend the child its 850 MB.
_TRAMPOLINE = f"""
import atexit, os, re, resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({_CHILD_MEMORY_CAP}, {_CHILD_MEMORY_CAP}))
def _peak():
    status = open("/proc/self/status").read()
    open(os.environ["EE_SEARCH_PEAK_FILE"], "w").write(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
atexit.register(_peak)
sys.argv = ["ee-search", *sys.argv[1:]]
runpy.run_module("ee_search.cli", run_name="__main__")
"""


def ee_search_process(args: list[str], cwd: Path, timeout: float = 120) -> Outcome:
    """`ee-search ARGS` as a process of its own, with its own peak memory (the child's own VmHWM)."""
    repo = str(Path(ee_search.__file__).resolve().parents[1])  # the checkout under test, not an install
    out_path, err_path = cwd.parent / f"{cwd.name}.stdout", cwd.parent / f"{cwd.name}.stderr"
    peak_path = cwd.parent / f"{cwd.name}.peak"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
           "EE_SEARCH_PEAK_FILE": str(peak_path)}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, *args], cwd=cwd, stdout=out, stderr=err,
                                env=env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, _ = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
    read = lambda path: path.read_bytes().decode("utf-8", "replace")  # noqa: E731
    peak_mb = int(peak_path.read_text()) / 1024 if peak_path.exists() else float("inf")
    return Outcome(proc.returncode, read(out_path), read(err_path), seconds, peak_mb)


def assert_refused(outcome: Outcome, *words: str) -> None:
    shown = f"exit {outcome.code}, {outcome.seconds:.1f} s, {outcome.peak_mb:.0f} MB: {outcome.stderr[:600]!r}"
    assert outcome.code == 2, shown
    assert "Traceback" not in outcome.stderr, shown
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) <= MAX_LINE, shown
    assert all(word in lines[0] for word in words), shown
    assert outcome.peak_mb < MAX_PEAK_MB, shown
    assert outcome.seconds < MAX_SECONDS, shown


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """The command's working directory: it must hold nothing but the study file afterwards."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def assert_nothing_created(work: Path, *kept: str) -> None:
    assert sorted(p.name for p in work.iterdir()) == sorted(kept)


def test_an_alias_bomb_is_refused_before_it_expands(here):
    (here / "study.yaml").write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB.split("model:")[1].split("train:")[0]) < 1200
    outcome = ee_search_process(["validate", "study.yaml"], here)
    assert_refused(outcome, "study.yaml: model.options.", "aliases")
    assert_nothing_created(here, "study.yaml")


def test_20000_levels_of_nesting_are_refused_without_a_traceback(here):
    nested = "[" * 20_000 + "]" * 20_000
    (here / "study.yaml").write_text(TINY_STUDY.replace("width: 64}", "width: 64, options: {deep: " + nested + "}}"))
    outcome = ee_search_process(["validate", "study.yaml"], here)
    assert_refused(outcome, "study.yaml: model.options.deep", "nested more than")
    assert_nothing_created(here, "study.yaml")


def test_a_50_mb_name_is_refused_by_the_file_size_and_never_echoed(here):
    with open(here / "study.yaml", "w") as f:
        f.write(TINY_STUDY.replace("name: tiny", "name: " + "n" * (50 << 20)))
    outcome = ee_search_process(["validate", "study.yaml"], here)
    assert_refused(outcome, "study.yaml: the file is", "limit")
    assert_nothing_created(here, "study.yaml")


def test_a_long_name_under_the_size_limit_is_quoted_cut_short(here):
    (here / "study.yaml").write_text(TINY_STUDY.replace("name: tiny", "name: " + "n" * 900_000))
    outcome = ee_search_process(["validate", "study.yaml"], here)
    assert_refused(outcome, "study.yaml: name: ", "(got 'nnnn")
    assert "n" * 100 not in outcome.stderr
    assert_nothing_created(here, "study.yaml")


def test_a_deeply_nested_set_value_is_refused_without_a_traceback(here):
    (here / "study.yaml").write_text(TINY_STUDY)
    # 60,000 levels fit in one command-line argument (Linux allows 128 KB).
    outcome = ee_search_process(["validate", "study.yaml", "--set", "model.options=" + "[" * 60_000], here)
    assert_refused(outcome, "--set: model.options", "nested more than")
    assert_nothing_created(here, "study.yaml")


def test_an_oversized_set_value_is_refused_before_it_is_parsed(workdir):
    (workdir / "study.yaml").write_text(TINY_STUDY)
    # Over 1 MB cannot pass through a real command line (Linux caps one argument at 128 KB), so this
    # one runs in-process: a caller of the CLI's code (a notebook, a wrapper) can still pass it.
    result = cli("validate", "study.yaml", "--set", "name=" + "n" * (2 << 20), catch_exceptions=True)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and len(lines[0]) <= MAX_LINE, result.output[:600]
    assert "--set: name: the value is 2,097,152 bytes" in lines[0], lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == ["study.yaml"]


def test_the_study_file_is_read_once_per_command(workdir):
    """A pipe can be read once: `ee-search validate <(envsubst < study.yaml)` works only if the command
    reads (and parses) the file once. In-process, so a second read cannot hang the test: if the command
    opens the pipe again, it is fed a broken file, and fails."""
    fifo = workdir / "study.yaml"
    os.mkfifo(fifo)
    done = threading.Event()

    def feed(text: str) -> None:  # the writer end, opened once the command opens the reader end
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.02)
                continue
            os.set_blocking(fd, True)
            os.write(fd, text.encode())
            os.close(fd)
            return

    def writer() -> None:
        feed(TINY_STUDY)
        if not done.wait(20):  # still running: it is waiting on a second read
            feed("a second read of the file: [")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = cli("validate", "study.yaml", catch_exceptions=True)
    finally:
        done.set()
    assert result.exit_code == 0, result.output[-600:]
    assert "train.lr" in result.output
