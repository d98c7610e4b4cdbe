"""`--format table`: findings grouped by container, worst first; colour on a terminal only."""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from doctor.engine.packs import SEVERITY_RANK
from doctor.report import register

COLORS = {"error": "31", "warning": "33", "info": "36"}  # ANSI red, yellow, cyan
WIDTH = 72  # the finding column wraps here, so a row stays readable in an 120-column terminal


def paint(text: str, severity: str | None, color: bool, bold: bool = False) -> str:
    if not color or not severity:
        return text
    codes = ";".join(c for c in ("1" if bold else "", COLORS.get(severity, "")) if c)
    return f"\x1b[{codes}m{text}\x1b[0m"


def finding_text(finding: dict) -> str:
    lines = textwrap.wrap(finding["message"], WIDTH) or [""]
    for item in finding["evidence"]:
        lines.extend(textwrap.wrap(item, WIDTH, initial_indent="  evidence: ", subsequent_indent="    "))
    if finding.get("fix"):
        lines.extend(textwrap.wrap(finding["fix"], WIDTH, initial_indent="  fix: ", subsequent_indent="    "))
    return "\n".join(lines)


@register("table")
def render(report: dict, stream, color: bool = False) -> None:
    by_container: dict[str, list] = {}
    for finding in report["findings"]:
        by_container.setdefault(finding["container"]["id"], []).append(finding)
    containers = [c for c in report["containers"] if c["id"] in by_container]
    containers.sort(key=lambda c: (-SEVERITY_RANK[c["worst"]], c["name"]))
    rows = []
    for container in containers:
        findings = sorted(by_container[container["id"]], key=lambda f: -SEVERITY_RANK[f["severity"]])
        for index, finding in enumerate(findings):
            name = f"{container['display_name']}\n({container['status']})" if index == 0 else ""
            rows.append([
                name,
                paint(finding["severity"], finding["severity"], color, bold=True),
                f"{finding['cause']}\n{finding['rule']}",
                finding_text(finding),
            ])
    if rows:
        stream.write(tabulate(rows, headers=["CONTAINER", "SEVERITY", "CAUSE / RULE", "FINDING"],
                              tablefmt="simple", disable_numparse=True))
        stream.write("\n\n")
    if report.get("suppressed"):
        stream.write("suppressed:\n")
        for finding in report["suppressed"]:
            stream.write(f"  {finding['container']['name']}: {finding['rule']} ({finding['severity']}) "
                         f"- {finding['suppressed_by']}\n")
        stream.write("\n")
    stream.write(summary_line(report, color) + "\n")
    for notice in report.get("notices") or []:
        stream.write(paint(f"note: {notice}", "warning", color) + "\n")


def summary_line(report: dict, color: bool = False) -> str:
    summary = report["summary"]
    counts = summary["findings"]
    parts = [f"{summary['containers']} container{'s' if summary['containers'] != 1 else ''} checked"]
    found = [paint(f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}", s, color)
             for s in ("error", "warning", "info") if counts[s]]
    parts.append(", ".join(found) if found else "no findings")
    if summary.get("suppressed"):
        hint = "" if "suppressed" in report else " (--show-suppressed lists them)"
        parts.append(f"{summary['suppressed']} suppressed{hint}")
    if summary["hidden_below_min_severity"]:
        parts.append(f"{summary['hidden_below_min_severity']} below --min-severity hidden")
    partial = [c for c in report["containers"] if c["unknown_checks"]]
    if partial:
        reasons = sorted({r for c in partial for r in c["unknown"].values()})
        parts.append(f"{len(partial)} not fully checked ({'; '.join(reasons)[:160]})")
    return ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if parts[2:] else "")
