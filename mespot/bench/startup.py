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
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import hydra

from mespot.bench import common
from mespot.bench.common import DEFAULT_OUT, load_average, log, num, write_report

BIN = Path(sys.executable).parent  # the console scripts sit beside the interpreter
LIGHT = ("mespot-evaluate", "mespot-annotations", "mespot-export", "mespot-aggregate",
         "mespot-plot")  # fmt: skip
HEAVY = ("mespot-preprocess", "mespot-train", "mespot-spot")
TARGET = 2.0  # seconds, for the LIGHT commands
ROUNDS = 5


def time_help(command: str, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `command --help`, which must succeed. The CPU time hardly
    moves with other work on the machine; the wall time is what a user waits."""
    cpu_before, start = children_cpu(), time.perf_counter()
    common.run([str(BIN / command), "--help"], cwd=cwd, timeout=300)
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
        f"| command | median s | min s | max s | CPU s | needs a network model | < {TARGET:g} s |",
        "|---|--:|--:|--:|--:|:-:|:-:|",
    ]
    for r in rows:
        met = "–" if r["meets_target"] is None else ("yes" if r["meets_target"] else "**no**")
        model = "yes" if r["needs_model"] else "no"
        lines.append(
            f"| {r['command']} | **{num(r['median_s'])}** | {num(r['min_s'])} | "
            f"{num(r['max_s'])} | {num(r['cpu_median_s'])} | {model} | {met} |"
        )
    lines += [
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
    parser = argparse.ArgumentParser(
        prog="python -m mespot.bench.startup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"runs per command, the median counts (default {ROUNDS})")  # fmt: skip
    parser.add_argument("--commands", nargs="+", choices=LIGHT + HEAVY, default=LIGHT + HEAVY,
                        help="console scripts to time (default: all eight)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"results folder (default {DEFAULT_OUT})")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m mespot.bench.startup " + " ".join(sys.argv[1:] if argv is None else argv)
    env = common.environment(common.git_commit(), hydra=hydra.__version__)
    start = time.perf_counter()
    rows = bench(args.commands, args.rounds)
    env["load_average_at_end"] = load_average()
    result = {"command": command.strip(), "environment": env, "rounds": args.rounds,
              "target_s": TARGET, "rows": rows, "seconds": time.perf_counter() - start}  # fmt: skip
    json_path, md_path = write_report(result, args.out, "startup", markdown)
    print(markdown(result))
    log(f"wrote {json_path} and {md_path} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
