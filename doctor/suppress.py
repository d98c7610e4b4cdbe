"""Silencing findings: config `ignore` entries (with a reason and an optional expiry) and the
container label `dockdoc.ignore=<rule>,<rule>`. Nothing disappears without a trace: suppressed
findings are returned with what silenced them, and expired ignores produce a notice."""

from __future__ import annotations

import datetime as _dt
import fnmatch

from doctor.config import Ignore

LABEL = "dockdoc.ignore"


def _selector_matches(selector: str, finding: dict) -> bool:
    return fnmatch.fnmatchcase(finding["rule"], selector) or selector == finding["cause"]


def _container_names(container: dict) -> list[str]:
    names = [container["name"]]
    compose = container.get("compose") or {}
    if compose.get("service"):
        names += [compose["service"], f"{compose.get('project')}/{compose['service']}"]
    return names


def apply(findings: list[dict], containers: list[dict], ignores: list[Ignore], label_ignores: bool = True,
          today: _dt.date | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """Returns (kept findings, suppressed findings each with `suppressed_by`, notices)."""
    today = today or _dt.date.today()
    by_id = {c["id"]: c for c in containers}
    kept, suppressed, notices = [], [], []
    expired_noted = set()
    for finding in findings:
        container = by_id.get(finding["container"]["id"]) or {"name": finding["container"]["name"]}
        reason = None
        for ignore in ignores:
            if not _selector_matches(ignore.rule, finding):
                continue
            if not any(fnmatch.fnmatchcase(n, ignore.container) for n in _container_names(container)):
                continue
            if ignore.until and ignore.until < today:
                if id(ignore) not in expired_noted:
                    expired_noted.add(id(ignore))
                    notices.append(f"expired: {ignore.describe()} ended on {ignore.until} and no longer "
                                   "silences anything; fix the cause or renew it")
                continue
            reason = f"config line {ignore.line}: {ignore.reason}" + (f" (until {ignore.until})" if ignore.until else "")
            break
        if reason is None and label_ignores:
            label = (container.get("labels") or {}).get(LABEL, "")
            selectors = [s.strip() for s in label.split(",") if s.strip()]
            if any(_selector_matches(s, finding) for s in selectors):
                reason = f"container label {LABEL}={label}"
        if reason is None:
            kept.append(finding)
        else:
            suppressed.append(dict(finding, suppressed_by=reason))
    return kept, suppressed, notices
