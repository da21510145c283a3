"""The benchmarks stand outside the product: nothing in mespot imports mespot.bench. And the one
helper they share builds their tables and stops a command that runs past its time, its children
included."""

import ast
import sys
import time
from pathlib import Path

from mespot.bench import common

PACKAGE = Path(common.__file__).resolve().parents[1]  # mespot/


def imported_modules(source: Path) -> set[str]:
    """Every module an import statement of `source` names (relative imports resolved)."""
    names = set()
    package = source.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_in_mespot_imports_the_benchmarks():
    sources = [p for p in PACKAGE.rglob("*.py") if "bench" not in p.relative_to(PACKAGE).parts]
    assert len(sources) > 40  # the whole package is scanned, not an empty folder
    offenders = {
        str(p.relative_to(PACKAGE.parent)): sorted(m for m in imported_modules(p) if "bench" in m)
        for p in sources
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_a_table_has_its_header_alignment_and_rows():
    lines = common.table(("method", "F1", "ok"), "lrc", [("a", 0.5, "yes"), ("b", None, "no")])
    assert lines == [
        "| method | F1 | ok |",
        "|---|--:|:-:|",
        "| a | 0.5 | yes |",
        "| b | None | no |",
    ]


def test_a_command_past_its_timeout_is_stopped_with_its_children(tmp_path):
    """A sweep's folds are the command's children: they must not run on after the timeout."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    log = tmp_path / "logs" / "slow.log"
    status, seconds = common.run_logged([sys.executable, "-c", script], log, timeout=3)
    assert status == common.TIMED_OUT and seconds < 20
    assert log.read_text().startswith("$ ")
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Whether a process runs; a killed one that waits to be reaped (a zombie) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
