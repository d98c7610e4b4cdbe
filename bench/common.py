"""Small helpers shared by the benchmarks: medians, timing a child process with its own peak RSS,
and a table printer. No dockdoc imports here, so the helpers cannot skew what they measure."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_child(argv: list[str], stdout_path: str, env: dict | None = None, cwd: str | None = None):
    """Run one process to completion; returns (wall seconds, peak RSS in MiB, exit code, stderr).

    Peak RSS comes from os.wait4's rusage for this child alone (ru_maxrss is KiB on Linux), which
    getrusage(RUSAGE_CHILDREN) cannot give: that one is the max over every child ever waited for.
    Wall time runs from just before the fork to the reap, as a user at a shell would see it.
    """
    with open(stdout_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        try:
            # Read stderr before reaping so a chatty child cannot block on a full pipe.
            stderr = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM in the parent: do not leave the child running
            proc.kill()
            proc.wait()
            raise
        elapsed = time.perf_counter() - start
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
    rss_mb = usage.ru_maxrss / 1024 if sys.platform.startswith("linux") else usage.ru_maxrss / 1048576
    return elapsed, rss_mb, proc.returncode, stderr.decode("utf-8", "replace")


def table(headers: list[str], rows: list[list]) -> str:
    """A plain text table; numbers (and numeric strings, for a chosen precision) right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = []
        for i, cell in enumerate(row):
            numeric = index > 0 and _is_number(rows[index - 1][i])
            parts.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(value) -> bool:
    if isinstance(value, str):
        return value.replace(".", "", 1).isdigit()
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
