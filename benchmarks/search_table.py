"""How cheap is the search: a learning-curve table of a grid study, and strategies replayed over it.

    python benchmarks/search_table.py record STUDY.yaml --out DIR [--device cpu] [--limit N] [--set k=v ...] [--trial N]
    python benchmarks/search_table.py replay DIR --seeds 30 --json OUT.json [--strategies ee-search random_full ...]
    python benchmarks/search_table.py paired DIR --trials 12 --seeds 30 --json OUT.json [--variant NAME PATH=VALUE ...]
    python benchmarks/search_table.py limits DIR --json OUT.json [--retrained DIR2 ...]   # the grid's own front, late bloomers, val vs test, training noise
    python benchmarks/search_table.py record --tiny --out DIR   # a 2-configuration digits grid, seconds

`record` trains every configuration of the study's grid (categorical dimensions only) to
train.max_epochs, early stopping and pruning off, and keeps after every epoch the monitors, the val
operating points with their thresholds, and those thresholds on the test split (_table.py). It is
resumable: run it again and it continues with the configurations not yet written.

`replay` runs real Optuna studies (in-memory) whose objective reads the table instead of training,
epoch by epoch, through the same early-stopping and pruning callbacks as a live trial
(_table_replay.py), and Syne Tune's own ASHA and MOASHA through its simulator backend
(_table_syne_tune.py). Every strategy gets the epochs `random_full` spends on 24 trials. The curve of a
run has one point per finished trial: (cumulative epochs, dense test HV, dense val HV), the front
chosen on val.

`paired` replays the live confirmation's shape (benchmarks/pruning.py: N trials with the default's
pruner against pruner none, same seed) at many seeds (_table_paired.py). `limits` reads off the table
what bounds every strategy: the whole grid's front, configurations a rung rule stops before they
bloom, and where the val and test orders disagree (_table_limits.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import resolve  # noqa: E402
from ee_search.errors import UserInputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# --tiny: scikit-learn's digits, a 2-configuration grid of 2 epochs: the whole path in seconds.
TINY_STUDY = ROOT / "benchmarks" / "studies" / "digits_grid_tiny.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="train the grid and write the table")
    rec.add_argument("study_file", type=Path, nargs="?")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--device", default="cpu")
    rec.add_argument("--limit", type=int, help="record at most N more configurations, then stop")
    rec.add_argument("--shard", default="0/1", metavar="K/N",
                     help="record only the configurations whose index is K modulo N (one process per device or core)")
    rec.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    rec.add_argument("--tiny", action="store_true", help=f"record {TINY_STUDY.name} (seconds)")
    rec.add_argument("--trial", type=int, default=0, metavar="N",
                     help="train each configuration as live trial N would (training seed = seed + N, same data split)")
    rep = _replaying(commands.add_parser("replay", help="replay search strategies over a recorded table"),
                     "an oracle for the ee-search strategy: its pruner judges each trial by its final best")
    rep.add_argument("--strategies", nargs="+")
    rep.add_argument("--budget-trials", type=int, default=24, help="the budget: random_full's epochs on this many trials")
    rep.add_argument("--figure", type=Path, help="the anytime figure (PNG); default: next to the JSON")
    rep.add_argument("--ee-set", action="append", default=[], metavar="PATH=VALUE",
                     help="try a variant of the default: --set values for the ee-search strategy only")
    pair = commands.add_parser("paired", help="the live check's shape: N trials pruned against unpruned, per seed")
    _replaying(pair, "replay each setting also with an oracle pruner that judges each trial by its final best")
    pair.add_argument("--trials", type=int, default=12)
    pair.add_argument("--variant", nargs="+", action="append", metavar="NAME PATH=VALUE",
                      help="a setting to compare with the default: its name, then its --set values")
    lim = commands.add_parser("limits", help="what bounds any strategy on this table")
    lim.add_argument("table", type=Path)
    lim.add_argument("--json", type=Path, required=True)
    lim.add_argument("--retrained", type=Path, nargs="+", default=[], metavar="DIR",
                     help="tables of some of the same configurations recorded with --trial N: training noise, seed by seed")
    args = parser.parse_args(argv)
    if getattr(args, "look_ahead", None) is not None and (not args.foresight or args.look_ahead < 0):
        parser.error("--look-ahead takes a number of epochs, 0 or more, and needs --foresight")
    try:
        if args.command == "record":
            return _record(args, parser)
        if args.command == "limits":
            from _table_limits import limits_main

            return limits_main(args)
        if args.command == "paired":
            from _table_paired import paired_main

            return paired_main(args)
        return _replay(args)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _replaying(command: argparse.ArgumentParser, foresight_help: str) -> argparse.ArgumentParser:
    """The arguments replay and paired share: the table, the seeds, the JSON, and the two oracles
    (both apply to the ee-search strategy, in paired to its pruned side)."""
    command.add_argument("table", type=Path)
    command.add_argument("--seeds", type=int, default=30)
    command.add_argument("--json", type=Path, required=True)
    command.add_argument("--never-prune", nargs="+", type=int, metavar="INDEX",
                         help="an oracle: these configurations of the table are never pruned")
    command.add_argument("--foresight", action="store_true", help=foresight_help)
    command.add_argument("--look-ahead", type=int, metavar="EPOCHS",
                         help="with --foresight: the oracle sees the best value EPOCHS epochs ahead, not the final one")
    return command


def _record(args, parser) -> int:
    from _table_record import record

    study_file = TINY_STUDY if args.tiny else args.study_file
    if study_file is None:
        parser.error("record needs a study file (or --tiny)")
    try:
        shard = tuple(int(part) for part in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        parser.error(f"--shard takes K/N with 0 <= K < N, not {args.shard!r}")
    if args.trial < 0:
        parser.error(f"--trial takes a trial number, 0 or more, not {args.trial}")
    done = record(study_file, args.out, resolve(args.device), args.limit, args.overrides, shard, args.trial)
    print(f"{args.out}: {done} configurations recorded")
    return 0


def _replay(args) -> int:
    from _table_report import replay_main

    return replay_main(args)


if __name__ == "__main__":
    sys.exit(main())
