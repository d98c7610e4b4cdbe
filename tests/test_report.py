"""Reports: every registered format renders; the JSON document's shape; the table's order and colour."""

from __future__ import annotations

import io
import json
import re

import pytest

from doctor import report
from doctor.engine import packs
from doctor.engine.evaluate import evaluate
from doctor.report.table import summary_line
from tests.snapshots import container, killed, mixed_snapshot, one_rule, snapshot

BUILTIN = packs.all_rules(packs.load_all(builtin=True, entry_points=False))
ANSI = re.compile(r"\x1b\[")


def _report(snap=None, rules=None, min_severity="info"):
    snap = snap or mixed_snapshot()
    result = evaluate(snap, BUILTIN if rules is None else rules)
    return report.build(snap, result.findings, result.unknown, min_severity, source="snapshot:test"), result


def _render(fmt, document, color=False) -> str:
    stream = io.StringIO()
    report.FORMATS[fmt](document, stream, color)
    return stream.getvalue()


def test_registry_has_the_documented_formats():
    assert {"table", "json"} <= set(report.FORMATS)


@pytest.mark.parametrize("fmt", sorted(report.FORMATS))
def test_every_format_renders(fmt):
    document, result = _report()
    assert len(result.findings) == 3
    out = _render(fmt, document)
    assert out.endswith("\n")
    for finding in result.findings:
        assert finding["rule"] in out, f"{fmt} does not name {finding['rule']}"
        assert finding["container"]["name"] in out


@pytest.mark.parametrize("fmt", sorted(report.FORMATS))
def test_every_format_renders_an_empty_report(fmt):
    document, _ = _report(snapshot())
    assert _render(fmt, document).strip()


def test_json_document():
    snap = mixed_snapshot()
    document, result = _report(snap)
    parsed = json.loads(_render("json", document))
    assert parsed["schema_version"] == report.REPORT_SCHEMA_VERSION == 1
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", parsed["scanned_at"])
    assert parsed["source"] == "snapshot:test"
    assert [c["name"] for c in parsed["containers"]] == ["ok", "web", "db", "job"]
    assert [c["id"] for c in parsed["containers"]] == [c["id"] for c in snap["containers"]]
    by_name = {c["name"]: c for c in parsed["containers"]}
    assert by_name["web"]["worst"] == "error" and by_name["web"]["findings"] == 1
    assert by_name["ok"]["worst"] is None and by_name["ok"]["findings"] == 0
    assert by_name["job"]["status"] == "exited" and by_name["job"]["exit_code"] == 137
    assert by_name["job"]["unknown"] == snap["containers"][3]["unknown"] != {}
    assert [(f["container"]["name"], f["rule"], f["severity"]) for f in parsed["findings"]] == [
        ("web", "dockdoc/bind-loopback", "error"),
        ("job", "dockdoc/killed", "warning"),
        ("db", "dockdoc/published-loopback-only", "info"),
    ]
    for finding in parsed["findings"]:
        assert {"rule", "cause", "severity", "container", "title", "message", "evidence", "fix"} <= set(finding)
        assert set(finding["container"]) == {"id", "name"}
        assert isinstance(finding["evidence"], list) and all(isinstance(e, str) for e in finding["evidence"])
        assert finding["message"] and finding["fix"] and finding["title"]
    expected_summary = {
        "containers": 4,
        "findings": {"info": 1, "warning": 1, "error": 1},
        "hidden_below_min_severity": 0,
        "unknown_checks": 0,
    }
    assert {key: parsed["summary"].get(key) for key in expected_summary} == expected_summary
    assert parsed["findings"] == json.loads(json.dumps(result.findings))


def test_table_groups_by_container_worst_first():
    rules = [
        one_rule("{fact: container.name, op: in, value: [mmm, zzz]}", severity="error", rule_id="r-error",
                 message="finding-error"),
        one_rule("{fact: container.name, op: in, value: [aaa]}", severity="warning", rule_id="r-warning",
                 message="finding-warning"),
        one_rule("{fact: container.name, op: in, value: [aaa, mmm]}", severity="info", rule_id="r-info",
                 message="finding-info"),
    ]
    snap = snapshot(container("aaa"), container("zzz"), container("quiet"), container("mmm"))
    document, _ = _report(snap, rules)
    out = _render("table", document)
    assert "quiet" not in out  # no findings, no row
    rows = [line for line in out.splitlines() if "finding-" in line]
    assert [(row.split()[0], re.search(r"finding-(\w+)", row).group(1)) for row in rows] == [
        ("mmm", "error"), ("info", "info"),  # mmm: error then info; the name is shown once
        ("zzz", "error"),
        ("aaa", "warning"), ("info", "info"),
    ]
    assert out.index("mmm") < out.index("zzz") < out.index("aaa")
    assert out.count("mmm") == 1 and out.count("aaa") == 1
    assert out.rstrip().splitlines()[-1] == "4 containers checked: 2 errors, 1 warning, 2 infos"


def test_table_without_color_has_no_ansi_escapes():
    document, _ = _report()
    plain = _render("table", document, color=False)
    assert not ANSI.search(plain)
    assert "\x1b" not in _render("json", document, color=False)
    colored = _render("table", document, color=True)  # the same report in colour does have them
    assert ANSI.search(colored)
    assert ANSI.sub("", colored).count("error") >= 1


def test_table_shows_message_evidence_and_fix():
    document, result = _report()
    out = _render("table", document)
    lines = out.splitlines()
    column = lines[0].index("FINDING")  # the finding column, read on its own
    cell = " ".join(" ".join(line[column:].split()) for line in lines[2:] if len(line) > column)
    for finding in result.findings:
        assert " ".join(finding["message"].split()) in cell
        for evidence in finding["evidence"]:
            assert "evidence: " + " ".join(evidence.split()) in cell
        assert "fix: " + " ".join(finding["fix"].split()) in cell


def test_min_severity_hides_lower_findings_and_counts_them():
    document, result = _report(min_severity="warning")
    assert len(result.findings) == 3
    assert [f["severity"] for f in document["findings"]] == ["error", "warning"]
    assert document["summary"]["findings"] == {"info": 0, "warning": 1, "error": 1}
    assert document["summary"]["hidden_below_min_severity"] == 1
    by_name = {c["name"]: c for c in document["containers"]}
    assert by_name["db"]["findings"] == 0 and by_name["db"]["worst"] is None
    out = _render("table", document)
    assert "published-loopback-only" not in out
    assert out.rstrip().splitlines()[-1] == ("4 containers checked: 1 error, 1 warning; "
                                             "1 below --min-severity hidden")

    document, _ = _report(min_severity="error")
    assert [f["rule"] for f in document["findings"]] == ["dockdoc/bind-loopback"]
    assert document["summary"]["hidden_below_min_severity"] == 2


def test_unknown_checks_are_counted_and_said():
    rule = one_rule("{fact: container.listeners, op: empty}", rule_id="needs-sockets")
    snap = snapshot(container("up", listeners=["0.0.0.0:80"]), killed("down"))
    document, result = _report(snap, [rule])
    assert result.findings == []
    assert document["summary"]["unknown_checks"] == 1
    assert [(c["name"], c["unknown_checks"]) for c in document["containers"]] == [("up", 0), ("down", 1)]
    line = summary_line(document)
    assert line == ("2 containers checked: no findings; 1 not fully checked "
                    "(unavailable: the container is not running)")
    assert _render("table", document).strip() == line
