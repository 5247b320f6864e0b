"""The expected latency of `ee-search pareto --latency` against the exported program's measured latency,
for rows spread along the quick start's front (docs/design.md §4, "Expected latency").

    python benchmarks/latency_front.py --json benchmarks/results/latency-front-cpu.json
    python benchmarks/latency_front.py --work DIR --json ...      # DIR: a finished quick start (or run there)
    python benchmarks/latency_front.py --tiny --json /tmp/latency-front-tiny.json   # the smoke run

Steps: run the quick start (unless `--work` holds a finished one), run `ee-search pareto --latency cpu
--batch 1,256` (the stages of every front trial timed once, every row given latency_ms_b1 and
latency_ms_b256), pick `--rows` rows spread evenly along the depth front, and export each row's
trial at the row's thresholds into a `torch.export` program, as export-model does. Each program must
reproduce its row's validation accuracy and average exit depth. Then measure each program running
over the validation split: at batch 1 one call per image, every image once (the mean over the split
is the expectation the model predicts); at batch B calls on windows of B consecutive images (the split
wrapped around), offset so that every image is in the same number of windows. Programs and batch sizes
take turns, forwards then backwards on alternate repeats, and the median over repeats is kept.

Pass: for each batch size, the median over the rows of |measured / expected - 1| is at most 15%.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TINY_QUICKSTART_SETS, add_tiny_argument, spread, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "quickstart.yaml"
TOLERANCE = 0.15
QUIET_LOAD = 2.5  # 1-minute load average below which the machine counts as quiet (2 cores)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as ee_search.cli.main sets it


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    add_tiny_argument(parser)
    parser.add_argument("--work", type=Path, default=None, help="the quick start's directory (default: a temp dir)")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    args.sets = []
    if args.tiny:  # a 2-trial, 1-epoch quick start on a few hundred images; 2 rows, batch 1 and 16
        args.sets = [*TINY_QUICKSTART_SETS, "search.n_trials=2"]
        args.rows, args.batches, args.repeats = 2, "1,16", 2
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def ee_search(*arguments: str, cwd: Path, sets: list[str]) -> float:
    """`ee-search ARGUMENTS --set ...` in `cwd`, which must exit 0; returns its wall seconds."""
    command = [sys.executable, "-m", "ee_search.cli", *arguments]
    for s in sets:
        command += ["--set", s]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - started


def spread_rows(rows: list[dict], count: int) -> list[dict]:
    """`count` rows at evenly spaced places along the front (its first and last included)."""
    if len(rows) <= count:
        return rows
    return [rows[round(i * (len(rows) - 1) / (count - 1))] for i in range(count)]


def row_programs(work: Path, rows: list[dict], sets: list[str]) -> list[tuple]:
    """Each row's trial exported at the row's thresholds, checked to reproduce the row: (program, images)."""
    import optuna
    from mlflow import MlflowClient

    from ee_search.config import load_study_file
    from ee_search.deploy.stage_latency import exported_program
    from ee_search.records import BEST_CHECKPOINT, load_best_checkpoint
    from ee_search.search import values_from_params

    loaded = load_study_file(work / STUDY.name, sets)
    study = optuna.load_study(study_name=loaded.config.name, storage=f"sqlite:///{work}/optuna.db")
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    out = []
    for i, row in enumerate(rows):
        trial = study.trials[int(row["trial_number"])]
        with tempfile.TemporaryDirectory() as tmp:
            payload = load_best_checkpoint(client.download_artifacts(row["mlflow_run_id"], BEST_CHECKPOINT, tmp))
        config = loaded.with_values(values_from_params(loaded.config, trial.params))
        program, images, labels = exported_program(payload, config, torch.device("cpu"), str(STUDY),
                                                   json.loads(row["thresholds"]), work / "programs" / f"row_{i}")
        prediction, exits, _ = program(images)
        accuracy = float(prediction.eq(labels).double().mean())
        depth = float(exits.double().mean() / program.num_exits)
        if abs(accuracy - float(row["accuracy"])) > 1e-9 or abs(depth - float(row["avg_exit_depth"])) > 1e-9:
            raise SystemExit(f"row {i}: the program gives accuracy {accuracy}, depth {depth}, not the row's {row}")
        out.append((program, images))
    return out


def sweep(program, images: torch.Tensor, batch: int):
    """One pass over the split in calls of `batch` images; returns a callable and its number of calls."""
    n = len(images)
    if batch == 1:
        calls = [images[i:i + 1] for i in range(n)]
    else:
        step = math.gcd(n, batch)  # windows at every multiple of gcd(n, B): each image in B / gcd of them
        doubled = torch.cat([images] * (1 + math.ceil(batch / n)))  # windows wrap around the split
        calls = [doubled[s:s + batch].contiguous() for s in range(0, n, step)]

    def run() -> None:
        for x in calls:
            program(x)

    return run, len(calls)


@torch.no_grad()
def measure(programs: list[tuple], batches: list[int], repeats: int) -> dict[tuple[int, int], list[float]]:
    """ms per call of each (row, batch), one value per repeat, in alternated order after a warm-up."""
    units = {}
    for i, (program, images) in enumerate(programs):
        for b in batches:
            units[(i, b)] = sweep(program, images, b)
    for run, _ in units.values():
        run()  # warm-up
    times: dict[tuple[int, int], list[float]] = {key: [] for key in units}
    keys = list(units)
    for r in range(repeats):
        for key in keys if r % 2 == 0 else reversed(keys):
            run, calls = units[key]
            started = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - started) * 1000.0 / calls)
    return times


def compare(rows: list[dict], times: dict, batches: list[int]) -> tuple[list[dict], dict]:
    out = []
    for i, row in enumerate(rows):
        entry = {k: row[k] for k in ("trial_number", "thresholds", "accuracy", "avg_exit_depth", "relative_flops")}
        for b in batches:
            expected = float(row[f"latency_ms_b{b}"])
            measured = statistics.median(times[(i, b)])
            entry[f"batch_{b}"] = {"expected_ms": expected, "measured_ms": measured,
                                   "measured_ms_spread": spread(times[(i, b)]), "ratio": measured / expected}
        out.append(entry)
    summary = {}
    for b in batches:
        errors = [abs(e[f"batch_{b}"]["ratio"] - 1.0) for e in out]
        summary[f"batch_{b}"] = {"median_abs_relative_error": statistics.median(errors),
                                 "max_abs_relative_error": max(errors), "pass": statistics.median(errors) <= TOLERANCE}
    return out, summary


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="latency-front-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        seconds = {}
        if not (work / "optuna.db").exists():
            (work / STUDY.name).write_text(STUDY.read_text())
            seconds["run"] = ee_search("run", STUDY.name, "--device", "cpu", "--quiet", cwd=work, sets=args.sets)
        batch = ",".join(map(str, args.batches))
        seconds["pareto_latency"] = ee_search("pareto", STUDY.name, "--out", "front", "--latency", "cpu", "--batch",
                                              batch, cwd=work, sets=args.sets)
        front = list(csv.DictReader((work / "front" / "pareto.csv").open()))
        costs = json.loads((work / "front" / "pareto.json").read_text())["latency"]
        rows = spread_rows(front, args.rows)
        here = Path.cwd()
        os.chdir(work)  # the study's data.root is relative to it
        try:
            programs = row_programs(work, rows, args.sets)
            load_at_measure = os.getloadavg()
            times = measure(programs, args.batches, args.repeats)
        finally:
            os.chdir(here)
    compared, summary = compare(rows, times, args.batches)
    write_json(args.json, "latency_front", torch.device("cpu"), False, {
        "command": f"ee-search pareto {STUDY.name} --out front --latency cpu --batch {batch}",
        "sets": args.sets, "repeats": args.repeats, "batches": args.batches, "tolerance": TOLERANCE,
        "front_rows": len(front), "rows": compared, "summary": summary,
        "pass": all(s["pass"] for s in summary.values()),
        "stage_costs_by_trial": costs["trials"], "seconds": seconds,
        "load_average_1_5_15min_at_start": [round(x, 2) for x in load_before],
        "load_average_1_5_15min_when_timing_began": [round(x, 2) for x in load_at_measure],
        # The timings mean little on a busy machine (other processes take the cores mid-call): say so.
        "quiet_machine": load_at_measure[0] < QUIET_LOAD,
    }, tiny=args.tiny)
    for b in args.batches:
        s = summary[f"batch_{b}"]
        print(f"batch {b}: median |measured/expected - 1| = {s['median_abs_relative_error']:.3f} "
              f"({'pass' if s['pass'] else 'FAIL'} at {TOLERANCE:.0%})")


if __name__ == "__main__":
    main()
