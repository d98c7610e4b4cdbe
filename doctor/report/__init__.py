"""Reporters: one module per output format, registered by name. `--format` choices come from
this registry, so a format cannot be offered without being implemented (and tested)."""

from __future__ import annotations

from typing import Callable, TextIO

from doctor import __version__, facts
from doctor.engine.packs import SEVERITIES, SEVERITY_RANK

REPORT_SCHEMA_VERSION = 1
FORMATS: dict[str, Callable[[dict, TextIO, bool], None]] = {}


def register(name: str):
    def wrap(fn):
        FORMATS[name] = fn
        return fn

    return wrap


def build(snapshot: dict, findings: list[dict], unknown: list, min_severity: str = "info",
          source: str = "docker", suppressed: list | None = None, notices: list | None = None,
          show_suppressed: bool = False) -> dict:
    """The report document (what `--format json` prints, documented in the README)."""
    suppressed = suppressed or []
    floor = SEVERITY_RANK[min_severity]
    shown = [f for f in findings if SEVERITY_RANK[f["severity"]] >= floor]
    unknown_by_container: dict[str, int] = {}
    for container_id, _rule in unknown:
        unknown_by_container[container_id] = unknown_by_container.get(container_id, 0) + 1
    counts = {name: 0 for name in SEVERITIES}
    for finding in shown:
        counts[finding["severity"]] += 1
    containers = []
    for c in snapshot["containers"]:
        state = c.get("state") or {}
        mine = [f for f in shown if f["container"]["id"] == c["id"]]
        containers.append({
            "id": c["id"],
            "name": c["name"],
            "display_name": c.get("display_name") or c["name"],
            "image": c.get("image"),
            "status": state.get("status"),
            "exit_code": state.get("exit_code"),
            "restart_count": (c.get("restart") or {}).get("count"),
            "health": (c.get("health") or {}).get("status"),
            "compose": c.get("compose"),
            "worst": max((f["severity"] for f in mine), key=SEVERITY_RANK.get, default=None),
            "findings": len(mine),
            "unknown": c.get("unknown") or {},
            "unknown_checks": unknown_by_container.get(c["id"], 0),
        })
    document = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "scanned_at": facts.now_iso(),
        "dockdoc_version": __version__,
        "source": source,
        "containers": containers,
        "findings": shown,
        "summary": {
            "containers": len(containers),
            "findings": counts,
            "hidden_below_min_severity": len(findings) - len(shown),
            "unknown_checks": len(unknown),
            "suppressed": len(suppressed),
        },
        "notices": list(notices or []),
    }
    if show_suppressed:
        document["suppressed"] = suppressed
    return document


# Imported for their registrations; at the bottom because they import `register` from here.
from doctor.report import json_format, table  # noqa: E402,F401
