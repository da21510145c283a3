"""What every benchmark shares: where results go, the facts the figures depend on (date, commit,
machine, load), the tables' number format and running a command that must not fail silently."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from mespot.files import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "experiments" / "bench"


def git_commit() -> str:
    """The commit of the code that runs, short: $MESPOT_COMMIT when set (a copy of the tree sent
    to another machine, whose .git, if any, need not be this tree's), else the checkout's HEAD,
    else "unknown"."""
    if os.environ.get("MESPOT_COMMIT"):
        return os.environ["MESPOT_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


def environment(commit: str, **libraries: str) -> dict:
    """What the figures depend on: when, which code (`commit`), which machine and libraries."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        **libraries,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
    }


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


def maxrss_mb(ru_maxrss: int) -> float:
    """ru_maxrss in MB: Linux counts kilobytes, macOS bytes."""
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(command: Sequence[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """A command whose failure stops the benchmark with its own error output."""
    done = subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")
    return done


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


def write_report(result: dict, out_dir: Path, name: str, markdown) -> tuple[Path, Path]:
    """<name>.json and <name>.md (rendered by `markdown`), each written atomically."""
    json_path = atomic_write_json(out_dir / f"{name}.json", result)
    md_path = atomic_write_text(out_dir / f"{name}.md", markdown(result))
    return json_path, md_path
