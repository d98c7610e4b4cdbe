"""The evaluator: three-valued logic, `each`, `unless`, templates, and the shape of a finding."""

from __future__ import annotations

import pytest

from doctor.engine.evaluate import Result, evaluate, evaluate_rule
from doctor.engine.templates import Template
from tests.snapshots import container, exited_state, load_rules, one_rule, pack_text, port, snapshot

TRUE = "{fact: container.name, op: eq, value: web}"
FALSE = "{fact: container.name, op: eq, value: nobody}"
UNKNOWN = "{fact: container.listeners, op: empty}"  # listeners named in container.unknown below


def _web(**extra):
    return container("web", listeners=None, **extra)  # listeners unknown, name "web"


def _outcome(when: str, target: dict | None = None):
    """'finding', 'none' or 'unknown' for a rule with this condition on `target`."""
    rule = one_rule(when)
    findings, unknown = evaluate_rule(rule, target or _web(), {})
    assert not (findings and unknown)
    return "finding" if findings else ("unknown" if unknown else "none")


def test_the_unknown_leaf_really_reads_an_unknown_fact():
    target = _web()
    assert "listeners" in target["unknown"] and target["listeners"] is None
    # The same leaf on a container whose sockets were read is a plain answer.
    assert _outcome(UNKNOWN, container("web", listeners=[])) == "finding"
    assert _outcome(UNKNOWN, container("web", listeners=["0.0.0.0:80"])) == "none"


@pytest.mark.parametrize("when,expected", [
    (TRUE, "finding"),
    (FALSE, "none"),
    (UNKNOWN, "unknown"),  # "listeners is empty" must not hold just because they could not be read
    # not
    (f"not: {TRUE}", "none"),
    (f"not: {FALSE}", "finding"),
    (f"not: {UNKNOWN}", "unknown"),
    # all: false wins, then unknown, then true
    (f"all: [{TRUE}, {TRUE}]", "finding"),
    (f"all: [{TRUE}, {UNKNOWN}]", "unknown"),
    (f"all: [{UNKNOWN}, {FALSE}]", "none"),
    (f"all: [{FALSE}, {UNKNOWN}]", "none"),
    (f"all: [{UNKNOWN}, {UNKNOWN}]", "unknown"),
    # any: true wins, then unknown, then false
    (f"any: [{FALSE}, {FALSE}]", "none"),
    (f"any: [{FALSE}, {UNKNOWN}]", "unknown"),
    (f"any: [{UNKNOWN}, {TRUE}]", "finding"),
    (f"any: [{TRUE}, {UNKNOWN}]", "finding"),
    # nested
    (f"not: {{any: [{FALSE}, {UNKNOWN}]}}", "unknown"),
    (f"not: {{all: [{FALSE}, {UNKNOWN}]}}", "finding"),
    (f"any: [{{not: {UNKNOWN}}}, {{all: [{TRUE}, {{not: {FALSE}}}]}}]", "finding"),
])
def test_three_valued_logic(when, expected):
    assert _outcome(when) == expected


def test_unknown_is_per_fact_name():
    # logs unknown, listeners known: a rule on listeners answers, a rule on logs does not.
    target = container("web", listeners=[], logs=None)
    assert _outcome("{fact: container.listeners, op: empty}", target) == "finding"
    assert _outcome("{fact: container.logs.lines, op: any-match, value: error}", target) == "unknown"
    assert _outcome("{fact: container.logs.lines, op: absent}", target) == "unknown"


def test_unknown_rule_is_counted_and_gives_no_finding():
    rules = load_rules(pack_text(f"""
        - id: needs-sockets
          cause: no-listener
          severity: error
          title: t
          when: {UNKNOWN}
          message: m
        - id: by-name
          cause: exit-error
          severity: warning
          title: t
          when: {{fact: container.name, op: eq, value: web}}
          message: "{{container.name}}"
    """))
    known = container("other", listeners=[])
    result = evaluate(snapshot(_web(), known), rules)
    assert isinstance(result, Result)
    got = sorted((f["container"]["name"], f["rule"]) for f in result.findings)
    assert got == [("other", "acme/needs-sockets"), ("web", "acme/by-name")]
    assert result.unknown == [(_web()["id"], "acme/needs-sockets")]


# ---- each ---------------------------------------------------------------------------------------------

LOOPBACK_RULE = dict(
    each="ports",
    when="""
all:
  - {fact: item.published, op: not-empty}
  - {fact: "item.listeners[*].address", op: all-in, value: ["127.0.0.1", "::1"]}
""",
    message="{item.port}/{item.proto} on {item.published[0].host_port}",
)


def test_each_gives_one_finding_per_matching_port():
    rule = one_rule(**LOOPBACK_RULE)
    target = container("web", listeners=["127.0.0.1:5000", "0.0.0.0:6000", "::1:7000"], ports=[
        port(5000, published="0.0.0.0:8080"),  # loopback and published: finding
        port(6000, published="0.0.0.0:8081"),  # all interfaces: fine
        port(7000, published="0.0.0.0:8082"),  # ::1 only: finding
        port(9000),                            # nothing published: fine
    ])
    findings, unknown = evaluate_rule(rule, target, {})
    assert unknown is False
    assert [f["message"] for f in findings] == ["5000/tcp on 8080", "7000/tcp on 8082"]
    assert [f["port"] for f in findings] == ["5000/tcp", "7000/tcp"]


def test_each_over_no_items_is_no_finding_and_not_unknown():
    rule = one_rule(**LOOPBACK_RULE)
    assert evaluate_rule(rule, container("web", ports=[]), {}) == ([], False)


def test_each_item_fact_unknown():
    rule = one_rule(**LOOPBACK_RULE)
    target = container("web", listeners=None, ports=[port(5000, published="0.0.0.0:8080")])
    assert target["ports"][0]["listeners"] is None
    assert evaluate_rule(rule, target, {}) == ([], True)


def test_each_over_an_unknown_collection_is_unknown():
    rule = one_rule(each="listeners", when="{fact: item.address, op: eq, value: 127.0.0.1}")
    assert evaluate_rule(rule, container("web", listeners=None), {}) == ([], True)
    findings, unknown = evaluate_rule(rule, container("web", listeners=["127.0.0.1:1", "0.0.0.0:2"]), {})
    assert (len(findings), unknown) == (1, False)


# ---- unless -------------------------------------------------------------------------------------------

def test_unless_true_silences():
    rule = one_rule(TRUE, unless="{fact: container.logs.lines, op: any-match, value: 'not found$'}")
    assert evaluate_rule(rule, container("web", logs=["sh: gunicorn: not found"]), {}) == ([], False)


def test_unless_false_keeps_the_finding():
    rule = one_rule(TRUE, unless="{fact: container.logs.lines, op: any-match, value: 'not found$'}")
    findings, _ = evaluate_rule(rule, container("web", logs=["Traceback ..."]), {})
    assert len(findings) == 1


def test_unless_unknown_keeps_the_finding():
    rule = one_rule(TRUE, unless="{fact: container.logs.lines, op: any-match, value: 'not found$'}")
    target = container("web", logs=None)
    assert "logs" in target["unknown"]
    findings, unknown = evaluate_rule(rule, target, {})
    assert len(findings) == 1 and unknown is False


def test_unless_regex_groups_do_not_leak_into_match():
    rule = one_rule("{fact: container.state.error, op: regex, value: 'exec: (?P<command>\\S+)'}",
                    unless="{fact: container.name, op: regex, value: '(?P<command>nothing)'}",
                    message="{match.command}")
    findings, _ = evaluate_rule(rule, container("web", state=exited_state(1, error="exec: gunicorn")), {})
    assert [f["message"] for f in findings] == ["gunicorn"]


# ---- templates ----------------------------------------------------------------------------------------

CTX = {
    "container": {"name": "web", "display_name": "web (shop/api)", "ports": [{"port": 80}, {"port": 443}],
                  "zero": 0, "no": False, "blank": "", "lines": ["first", "second"], "none": None,
                  "labels": {"a": "1"}},
    "host": {},
}


@pytest.mark.parametrize("text,expected", [
    ("{container.display_name}", "web (shop/api)"),
    ("{container.ports[*].port}", "80, 443"),
    ("{{literal}} {container.name}", "{literal} web"),
    ("{{{container.name}}}", "{web}"),
    ("a }} b {{", "a } b {"),
    ("{container.missing}", "?"),
    ("{container.none}", "?"),
    ("{container.missing.deeper[0]}", "?"),
    ("{container.zero} {container.no}", "0 false"),
    ("{container.missing || 'fallback'}", "fallback"),
    ("{length(container.lines)}", "2"),
    ("{container.labels}", '{"a": "1"}'),
    ("{container.ports[?port > `100`].port}", "443"),
    ("{container.ports[?port > `1000`].port}", "none"),
    # a runtime type error is a missing value, not an exception
    ("{join(', ', container.missing)}", "?"),
    ("{length(container.zero)}", "?"),
    ("{sort_by(container.ports, &port)[0].port} {abs(container.name)}", "80 ?"),
    # nothing but the context is reachable
    ("{__class__}", "?"),
    ("{container.__class__.__init__.__globals__}", "?"),
    ("{__import__}", "?"),
])
def test_template_render(text, expected):
    assert Template(text).render(CTX) == expected


@pytest.mark.parametrize("text,expected", [
    ("State.Error: {container.missing}", []),  # every expression found nothing: dropped
    ("{container.blank}", []),
    ("log: {container.lines[?contains(@, 'zzz')] | [-1]}", []),
    ("log: {container.lines[?contains(@, 'sec')] | [-1]}", ["log: second"]),
    ("{container.lines}", ["first", "second"]),  # one expression, a list: a line per item
    ("{container.ports[*].port}", ["80", "443"]),
    ("ports: {container.ports[*].port}", ["ports: 80, 443"]),  # with text around it: one line
    ("{container.name} / {container.missing}", ["web / ?"]),  # one found: kept, the other shows ?
    ("{container.zero}", ["0"]),  # 0 is a value
    ("no expressions at all", ["no expressions at all"]),
    ("{join(', ', container.missing)}", []),
])
def test_template_evidence_lines(text, expected):
    assert Template(text).render_lines(CTX) == expected


def test_long_lists_are_cut():
    ctx = {"items": list(range(25))}
    assert Template("{items}").render(ctx) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... 15 more"


@pytest.mark.parametrize("text", ["a } b", "{unclosed", "{container..name}", "{}"])
def test_bad_templates_fail_at_compile(text):
    from doctor.engine.templates import TemplateError

    with pytest.raises(TemplateError):
        Template(text)


def test_evidence_in_a_finding_drops_missing_lines_and_expands_lists():
    rule = one_rule(TRUE, message="{container.name} exited {container.state.exit_code}",
                    evidence=["State.Error: {container.state.error}", "log: {container.logs.lines[-2:]}",
                              "{container.logs.lines[-2:]}", "health: {container.health.status}"])
    findings, _ = evaluate_rule(rule, container("web", state=exited_state(3), logs=["a", "b", "c"]), {})
    (finding,) = findings
    assert finding["message"] == "web exited 3"
    assert finding["evidence"] == ["log: b, c", "b", "c"]


# ---- the finding ----------------------------------------------------------------------------------

def test_finding_shape():
    rule = one_rule("{fact: container.logs.lines, op: any-match, value: 'listening on (?P<addr>\\S+)'}",
                    message="{container.display_name} listens on {match.addr}",
                    evidence=["log: {match.text}"], fix="bind {match.addr} to 0.0.0.0 in {container.name}",
                    severity="warning", cause="bind-loopback", rule_id="loop")
    target = container("web", logs=["starting", "listening on 127.0.0.1:5000", "ready"])
    result = evaluate(snapshot(target), [rule])
    assert result.unknown == []
    (finding,) = result.findings
    assert {k: finding[k] for k in ("rule", "cause", "severity", "container", "title", "message", "evidence", "fix")} == {
        "rule": "acme/loop",
        "cause": "bind-loopback",
        "severity": "warning",
        "container": {"id": target["id"], "name": "web"},
        "title": "A title",
        "message": "web listens on 127.0.0.1:5000",
        "evidence": ["log: listening on 127.0.0.1:5000"],
        "fix": "bind 127.0.0.1:5000 to 0.0.0.0 in web",
    }


def test_finding_without_fix_has_none():
    rule = one_rule(TRUE, fix=None)
    (finding,), _ = evaluate_rule(rule, container("web"), {})
    assert finding["fix"] is None


def test_findings_are_sorted_worst_first():
    rules = [one_rule(TRUE, severity=s, rule_id=s) for s in ("info", "error", "warning")]
    result = evaluate(snapshot(container("web")), rules)
    assert [f["severity"] for f in result.findings] == ["error", "warning", "info"]
    assert [f["rule"] for f in result.findings] == ["acme/error", "acme/warning", "acme/info"]


def test_host_facts_are_in_the_context():
    rule = one_rule("{fact: host.daemon.local, op: eq, value: false}", message="remote {host.daemon.url}")
    remote = {"daemon": {"local": False, "url": "tcp://build:2376"}}
    findings = evaluate(snapshot(container("web"), host=remote), [rule]).findings
    assert [f["message"] for f in findings] == ["remote tcp://build:2376"]
    assert evaluate(snapshot(container("web")), [rule]).findings == []


def test_runtime_type_error_in_a_condition_is_no_match():
    # length() of a number and join() of a null raise inside JMESPath; the leaf is simply false.
    rule = one_rule("{fact: 'length(container.state.exit_code)', op: ge, value: 0}")
    assert evaluate_rule(rule, container("web"), {}) == ([], False)
    negated = one_rule("{not: {fact: \"join(',', container.nothing)\", op: eq, value: x}}")
    assert len(evaluate_rule(negated, container("web"), {})[0]) == 1


def test_each_is_bounded():
    from doctor.engine.evaluate import MAX_ITEMS

    rule = one_rule(each="ports", when="{fact: item.exposed, op: eq, value: true}", message="{item.port}")
    target = container("web", listeners=[], ports=[port(n) for n in range(1, MAX_ITEMS + 500)])
    findings, _ = evaluate_rule(rule, target, {})
    assert len(findings) == MAX_ITEMS
    assert findings[-1]["message"] == str(MAX_ITEMS)


SUPERSEDED_PACK = pack_text("""
- id: generic
  cause: exit-error
  severity: error
  title: Exited
  superseded_by: [missing-config]
  when: {fact: container.state.exit_code, op: eq, value: 1}
  message: exited 1
- id: specific
  cause: missing-config
  severity: error
  title: Missing config
  when: {fact: container.logs.lines, op: any-match, value: "KeyError: '(?P<var>[A-Z_]+)'"}
  message: "{match.var} is not set"
""")


def test_superseded_finding_yields_to_the_specific_cause_on_the_same_container():
    rules = load_rules(SUPERSEDED_PACK)
    explained = container(name="explained", state=exited_state(1), logs=["KeyError: 'DATABASE_URL'"])
    bare = container(name="bare", state=exited_state(1), logs=["something else"])
    found = evaluate(snapshot(explained, bare), rules).findings
    assert sorted((f["container"]["name"], f["rule"]) for f in found) == [
        ("bare", "acme/generic"), ("explained", "acme/specific")]
    # Without the specific rule (disabled), the generic finding stays.
    alone = evaluate(snapshot(explained), [r for r in rules if r.id == "generic"]).findings
    assert [f["rule"] for f in alone] == ["acme/generic"]


def test_superseded_by_names_known_causes():
    from doctor.engine import packs

    text = SUPERSEDED_PACK.replace("superseded_by: [missing-config]", "superseded_by: [missing-confg]")
    _pack, problems = packs.load_text(text, "t.yaml")
    assert any("superseded_by[0]: unknown cause 'missing-confg' (did you mean 'missing-config'?)" in p
               for p in problems), problems
