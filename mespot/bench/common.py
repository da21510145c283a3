"""What every benchmark shares, so that their reports agree and none measures its own way: the
command line (--quick, --out), the facts the figures depend on (date, commit, machine, libraries,
load), running a command that must not fail silently and measuring its peak memory, the fastest
of repeated runs, and the report itself (header, tables, footer, {json,md} written atomically).

Nothing in mespot outside this package imports it: benchmarks measure the product, never the
other way round (tests/test_bench_common.py)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from mespot.files import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "experiments" / "bench"
QUICK_OUT = Path(tempfile.gettempdir()) / "mespot-bench"  # a smoke test's results
TIMED_OUT = 124  # run_logged's status for a command stopped at its timeout, as timeout(1) says
CHILD_MARK = "MESPOT-BENCH-RESULT "  # a child's result line, among whatever else it prints


# --------------------------------------------------------------------------- command line


def arguments(name: str, doc: str | None, quick: str | None = None) -> argparse.ArgumentParser:
    """The parser of `python -m mespot.bench.<name>`, with the module's docstring as its help and
    --out; --quick too (`quick` says what it runs) where the benchmark has a smoke test."""
    parser = argparse.ArgumentParser(
        prog=f"python -m mespot.bench.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if quick:
        parser.add_argument("--quick", action="store_true", help=quick)
    where = f"default {DEFAULT_OUT}" + ("; --quick: a temp folder" if quick else "")
    parser.add_argument("--out", type=Path, help=f"results folder ({where})")
    return parser


def out_folder(args: argparse.Namespace) -> Path:
    """Where the results go: --out, else a temporary folder for a smoke test (its figures are no
    result to keep), else experiments/bench."""
    if args.out:
        return args.out
    return QUICK_OUT if getattr(args, "quick", False) else DEFAULT_OUT


def command_line(name: str, argv: Sequence[str] | None) -> str:
    """The command that made a report, as the report's reader would type it again."""
    words = sys.argv[1:] if argv is None else argv
    return " ".join([f"python -m mespot.bench.{name}", *words])


# --------------------------------------------------------------------------- environment


def first_line(command: Sequence[str], timeout: float = 20) -> str | None:
    """The first line a command prints, or None when it fails or prints nothing."""
    try:
        done = subprocess.run(
            list(command), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0] if lines else None


def git_commit() -> str:
    """The commit of the code that runs, short: $MESPOT_COMMIT when set (a copy of the tree sent
    to another machine, whose .git, if any, need not be this tree's), else the checkout's HEAD,
    else "unknown"."""
    if os.environ.get("MESPOT_COMMIT"):
        return os.environ["MESPOT_COMMIT"]
    return first_line(["git", "rev-parse", "--short", "HEAD"], timeout=10) or "unknown"


def cpu_model() -> str:
    """The CPU's name when the OS says it, else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load: other work on the machine slows every figure down."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(*modules: str, **facts: object) -> dict:
    """What the figures depend on: when, which code, which machine, the version of each of
    `modules` (imported by name) and any further `facts`."""
    versions = {name: importlib.import_module(name).__version__ for name in modules}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        **versions,
        **facts,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
    }


# --------------------------------------------------------------------------- commands


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def say(log: Callable[[str], None] | None, message: str) -> None:
    """`message` through `log` when there is one: tests run the parts quietly."""
    if log:
        log(message)


def console_script(name: str) -> str:
    """A mespot command: the one installed beside this Python (the environment that runs the
    benchmark), else the one on PATH, else the bare name."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


def installed(name: str) -> bool:
    return shutil.which(console_script(name)) is not None


def run(command: Sequence[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """A command whose failure stops the benchmark with its own error output."""
    done = subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return done


def run_logged(
    command: Sequence[str], log_path: Path, timeout: float | None = None
) -> tuple[int, float]:
    """Run `command` from the repository root, its output into `log_path` (a long run's
    progress, readable while it runs): (status, seconds). Past `timeout`, or when the benchmark
    itself stops, its whole process group is killed (a sweep's fold processes too); a timeout
    gives status TIMED_OUT."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        process = subprocess.Popen(
            list(command), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            status = TIMED_OUT
        except BaseException:  # Ctrl-C: its own session does not get the terminal's signal
            _kill_group(process)
            raise
    return status, time.perf_counter() - start


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tail(path: Path | str, chars: int = 2000) -> str:
    """The end of a log: where a failed command says why."""
    return Path(path).read_text(errors="replace")[-chars:]


def maxrss_mb(ru_maxrss: int) -> float:
    """ru_maxrss in MB: Linux counts kilobytes, macOS bytes."""
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


_PEAK_RSS = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'returncode': done.returncode, 'ru_maxrss': peak,\n"
    "                  'stdout': done.stdout, 'stderr': done.stderr[-2000:]}))\n"
)


def peak_rss_run(command: Sequence[str], cwd: Path) -> tuple[float, str]:
    """Run a command: (the largest RSS in MB of any process it starts, its stdout). Measured
    through a fresh, small Python whose only children they are: Linux carries ru_maxrss over
    exec, so a process started straight from this (large) one would report this one's size."""
    done = run([sys.executable, "-c", _PEAK_RSS, *command], cwd)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{report['stderr']}")
    return maxrss_mb(report["ru_maxrss"]), report["stdout"]


def run_child(module: str, args: Sequence[str], cwd: Path) -> tuple[float, dict]:
    """A measurement in a fresh Python (`python -m <module> <args>`, which ends with
    answer_parent), so that its memory is its own, nothing of this process: (its peak RSS in MB,
    the result it answered with)."""
    peak, stdout = peak_rss_run([sys.executable, "-m", module, *args], cwd)
    for line in reversed(stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return peak, json.loads(line[len(CHILD_MARK) :])
    raise RuntimeError(f"python -m {module} {' '.join(args)} answered no result:\n{stdout[-2000:]}")


def answer_parent(result: dict) -> int:
    """A child's answer to run_child: its result on a line of its own; exit status 0."""
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


def fastest(runs: Sequence[dict], rate: str) -> dict:
    """The run with the highest `rate` (a run without one counts as the slowest): other work on
    the machine only ever slows a run down, so the fastest run is the least disturbed one."""
    return max(runs, key=lambda r: r[rate] or 0.0)


# --------------------------------------------------------------------------- the report


def header(env: dict, libraries: str, quick: bool) -> str:
    """The report's first line: the environment's facts; `libraries` names what was measured."""
    return (
        f"{env['date']}, commit {env['commit']}, {env['cpu_count']} CPUs ({env['cpu']}), "
        f"{libraries}, Python {env['python']}, load average {env['load_average_at_start']} "
        f"at start, {env.get('load_average_at_end')} at end" + (" — QUICK run" if quick else "")
    )


def num(value: float | None, digits: int = 2) -> str:
    """A figure for the tables; a dash when it was not measured."""
    return "–" if value is None else f"{value:.{digits}f}"


def f1(row: dict | None, key: str) -> str:
    """The F1 of `row[key]` (counts of one type, or overall) for the tables; a dash without it."""
    return "–" if not row or key not in row else num(row[key]["f1"], 4)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


ALIGN = {"l": "---", "r": "--:", "c": ":-:"}


def table(columns: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table: the header, its alignment (a letter per column: l, r or c) and a line
    per row of cells."""
    if len(align) != len(columns):
        raise ValueError(f"{len(columns)} columns, {len(align)} alignments")
    return [_row(columns), "|" + "".join(ALIGN[a] + "|" for a in align), *map(_row, rows)]


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def made_by(command: str) -> list[str]:
    """The report's last lines: the command that made it, to run it again."""
    return ["Made by:", "", "```", command, "```", ""]


def write_report(
    result: dict, out_dir: Path, name: str, markdown: Callable[[dict], str]
) -> tuple[Path, Path]:
    """<name>.json and <name>.md (rendered by `markdown`), each written atomically."""
    json_path = atomic_write_json(out_dir / f"{name}.json", result)
    md_path = atomic_write_text(out_dir / f"{name}.md", markdown(result))
    return json_path, md_path


def finish(
    result: dict, start: float, out_dir: Path, name: str, markdown: Callable[[dict], str]
) -> None:
    """A benchmark's end: its seconds since `start` (a perf_counter) and the load at the end
    into `result`, then write_report, and where it went."""
    result["seconds"] = time.perf_counter() - start
    result["environment"]["load_average_at_end"] = load_average()
    json_path, md_path = write_report(result, out_dir, name, markdown)
    log(f"wrote {json_path} and {md_path} in {result['seconds']:.0f} s")
