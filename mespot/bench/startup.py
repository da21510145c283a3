"""Start-up benchmark: how long each console script takes to answer `--help`, in a fresh process.

    python -m mespot.bench.startup [--rounds N] [--commands C ...] [--out DIR]

`--help` is the wait before a command does any work: the interpreter, the imports and, for a
Hydra app, composing its config (Hydra's help also lists every config group under conf/). The
commands that need no network model (mespot-evaluate, -annotations, -export, -aggregate, -plot)
never import torch or Lightning (tests/test_startup.py) and must start in < 2 s (issue 25);
mespot-preprocess, mespot-train and mespot-spot are timed beside them. Rounds take the commands
in turn, so that other work on the machine slows them alike; the median run counts. Writes
experiments/bench/startup.json (every run, with date, commit, machine and load) and startup.md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mespot.bench import common
from mespot.bench.common import console_script, log, num

LIGHT = ("mespot-evaluate", "mespot-annotations", "mespot-export", "mespot-aggregate",
         "mespot-plot")  # fmt: skip
HEAVY = ("mespot-preprocess", "mespot-train", "mespot-spot")
TARGET = 2.0  # seconds, for the LIGHT commands
ROUNDS = 5
COLUMNS = ("command", "median s", "min s", "max s", "CPU s", "needs a network model",
           f"< {TARGET:g} s")  # fmt: skip


def time_help(command: str, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `command --help`, which must succeed. The CPU time hardly
    moves with other work on the machine; the wall time is what a user waits."""
    cpu_before, start = children_cpu(), time.perf_counter()
    common.run([console_script(command), "--help"], cwd=cwd, timeout=300)
    return time.perf_counter() - start, children_cpu() - cpu_before


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench(commands: Sequence[str], rounds: int) -> list[dict]:
    """One row per command: its runs, their medians and whether it meets TARGET (LIGHT only)."""
    runs: dict[str, list[tuple[float, float]]] = {c: [] for c in commands}
    with tempfile.TemporaryDirectory(prefix="mespot-bench-startup-") as cwd:
        for round_ in range(rounds):
            log(f"round {round_ + 1}/{rounds}")
            for command in commands:
                runs[command].append(time_help(command, Path(cwd)))
    return [row(command, times) for command, times in runs.items()]


def row(command: str, runs: list[tuple[float, float]]) -> dict:
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    median, light = statistics.median(wall), command in LIGHT
    return {
        "command": command,
        "median_s": median,
        "min_s": min(wall),
        "max_s": max(wall),
        "cpu_median_s": statistics.median(cpu),
        "runs_s": wall,
        "cpu_runs_s": cpu,
        "needs_model": not light,
        "meets_target": median < TARGET if light else None,
    }


def cells(r: dict) -> list[str]:
    """A command's line of the table."""
    met = "–" if r["meets_target"] is None else ("yes" if r["meets_target"] else "**no**")
    model = "yes" if r["needs_model"] else "no"
    return [r["command"], f"**{num(r['median_s'])}**", num(r["min_s"]), num(r["max_s"]),
            num(r["cpu_median_s"]), model, met]  # fmt: skip


def markdown(result: dict) -> str:
    """The report: the environment, then one line per command."""
    env, rows = result["environment"], result["rows"]
    lines = [
        "# Start-up benchmark",
        "",
        common.header(env, f"hydra-core {env['hydra']}", quick=False),
        "",
        f"## `<command> --help` in a fresh process (median of {result['rounds']} runs)",
        "",
        *common.table(COLUMNS, "lrrrrcc", map(cells, rows)),
        "",
        "Wall clock of the whole process: the interpreter, the imports, composing the config "
        "and printing the help; CPU s: its user + system time (median), which other work on the "
        "machine hardly moves. The commands without a network model import neither torch nor "
        "Lightning; a Hydra app's `--help` also walks every config group under conf/ (about "
        "1 s of the figure); a real run composes one config and skips that.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common.arguments("startup", __doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"runs per command, the median counts (default {ROUNDS})")  # fmt: skip
    parser.add_argument("--commands", nargs="+", choices=LIGHT + HEAVY, default=LIGHT + HEAVY,
                        help="console scripts to time (default: all eight)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    result = {"command": common.command_line("startup", argv),
              "environment": common.environment("hydra"), "rounds": args.rounds,
              "target_s": TARGET}  # fmt: skip
    result["rows"] = bench(args.commands, args.rounds)
    common.finish(result, start, common.out_folder(args), "startup", markdown)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
