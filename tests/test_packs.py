"""Rule pack loading: every error with `file:line:` and a breadcrumb, and loading untrusted YAML safely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doctor.engine import packs
from doctor.engine.evaluate import evaluate_rule
from doctor.errors import RulePackError
from tests.snapshots import container, exited_state, one_rule, pack_text

DATA = Path(__file__).parent / "data"

VALID_RULE = """
- id: {id}
  cause: exit-error
  severity: error
  title: Exited
  when: {{fact: container.state.exit_code, op: eq, value: 1}}
  message: "{{container.name}} exited"
"""


def errors_of(text: str, origin: str = "team.yaml") -> list[str]:
    pack, problems = packs.load_text(text, origin)
    assert (pack is None) == bool(problems)
    return problems


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the only line in `text` containing `marker`."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(found) == 1, f"{marker!r} is on lines {found}"
    return found[0]


def only_error(text: str) -> str:
    problems = errors_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# ---- every error, with file:line: and a breadcrumb -----------------------------------------------

UNKNOWN_OP_PACK = pack_text("""
- id: bind
  cause: bind-loopback
  severity: error
  title: App listens on loopback
  when:
    all:
      - {fact: container.state.running, op: eq, value: true}
      - {fact: container.listeners, op: equal, value: []}
  message: "{container.name}"
""")


def test_unknown_operator_has_line_and_breadcrumb():
    error = only_error(UNKNOWN_OP_PACK)
    line = line_of(UNKNOWN_OP_PACK, "op: equal")
    assert error.startswith(f"team.yaml:{line}: rule acme/bind: when.all[1].op: unknown operator 'equal'")


def test_unknown_operator_suggests_the_closest():
    assert "when.all[1].op: unknown operator 'equal' (did you mean 'eq'?)" in only_error(UNKNOWN_OP_PACK)


def test_operator_typo_suggestion():
    text = pack_text("""
- id: r
  cause: exit-error
  severity: error
  title: t
  when: {fact: container.logs.lines, op: any-matches, value: x}
  message: m
""")
    assert only_error(text).endswith("when.op: unknown operator 'any-matches' (did you mean 'any-match'?)")


# Markers in tests/data/bad_pack.yaml -> what the error on that line must say.
BAD_PACK_EXPECTED = {
    "unknown top-level key": "colour: unknown key 'colour'",
    "unknown operator": "rule acme/bind: when.all[1].op: unknown operator 'equal'",
    "unknown cause": "rule acme/typo: cause: unknown cause 'crash-lop' (did you mean 'crash-loop'?)",
    "bad severity": "rule acme/typo: severity: must be one of info, warning, error",
    "unknown rule key": "rule acme/typo: titel: unknown key 'titel' (did you mean 'title'?)",
    "backreference": "rule acme/typo: when.value: invalid regular expression",
    "lookahead": "rule acme/look: when.value: invalid regular expression 'foo(?=bar)'",
    "duplicate rule id": "rule acme/fine: id: duplicate rule id (first defined at line ",
}


def test_every_error_in_a_pack_is_reported_with_its_line():
    path = DATA / "bad_pack.yaml"
    text = path.read_text()
    expected = {}
    for number, line in enumerate(text.splitlines(), 1):
        found = re.search(r"# <- error: (.+)$", line)
        if found:
            expected[number] = BAD_PACK_EXPECTED[found.group(1)]
    assert len(expected) == len(BAD_PACK_EXPECTED)

    found_packs, problems = packs.load_path(str(path))
    assert found_packs == []  # an invalid pack contributes no rules
    assert len(problems) == len(expected), "\n".join(problems)
    by_line = {}
    for problem in problems:
        head = re.match(rf"^{re.escape(str(path))}:(\d+): (.*)$", problem)
        assert head, f"no file:line: in {problem!r}"
        by_line[int(head.group(1))] = head.group(2)
    assert set(by_line) == set(expected)
    for number, message in expected.items():
        assert by_line[number].startswith(message), (number, by_line[number])
    first, again = [i for i, line in enumerate(text.splitlines(), 1) if "- id: fine" in line]
    assert by_line[again].endswith(f"(first defined at line {first})")


def test_valid_pack_loads():
    loaded, problems = packs.load_path(str(DATA / "good_pack.yaml"))
    assert problems == []
    (pack,) = loaded
    assert (pack.name, pack.version, pack.requires) == ("acme", "1.2.0", ">=0.1")
    assert [r.qualified_id for r in pack.rules] == ["acme/debug-port-published", "acme/missing-secret"]
    rule = pack.rules[0]
    assert rule.line == line_of((DATA / "good_pack.yaml").read_text(), "id: debug-port-published")
    assert rule.origin == str(DATA / "good_pack.yaml")


def test_unknown_cause_and_pack_causes():
    bad = pack_text(VALID_RULE.format(id="r").replace("cause: exit-error", "cause: slow-dns"))
    error = only_error(bad)
    assert error.startswith(f"team.yaml:{line_of(bad, 'cause:')}: rule acme/r: cause: unknown cause 'slow-dns'")
    # a new cause under the pack's own prefix is fine; under another pack's, it is not
    assert errors_of(pack_text(VALID_RULE.format(id="r").replace("cause: exit-error", "cause: acme/slow-dns"))) == []
    other = pack_text(VALID_RULE.format(id="r").replace("cause: exit-error", "cause: dockdoc/slow-dns"))
    assert "cause: a new cause must be named 'acme/<name>'" in only_error(other)


def test_unknown_top_level_key():
    text = "pack: acme\nrule:\n" + VALID_RULE.format(id="r")
    problems = errors_of(text)
    assert "team.yaml:2: rule: unknown key 'rule' (did you mean 'rules'?)" in problems
    assert "team.yaml:1: rules: 'rules' must be a non-empty list" in problems
    assert len(problems) == 2


def test_unknown_rule_key_and_condition_key():
    text = pack_text(VALID_RULE.format(id="r").replace("title: Exited", "title: Exited\n  severty: error")
                     .replace("value: 1}", "vaule: 1}"))
    problems = errors_of(text)
    assert f"team.yaml:{line_of(text, 'severty')}: rule acme/r: severty: unknown key 'severty' (did you mean 'severity'?)" \
        in problems
    assert any(p.startswith(f"team.yaml:{line_of(text, 'vaule')}: rule acme/r: when.vaule: unknown key 'vaule' "
                            "(did you mean 'value'?)") for p in problems), problems


def test_bad_severity():
    text = pack_text(VALID_RULE.format(id="r").replace("severity: error", "severity: critical"))
    assert only_error(text) == (f"team.yaml:{line_of(text, 'critical')}: rule acme/r: severity: "
                                "must be one of info, warning, error")


def test_missing_required_keys_are_each_named():
    text = pack_text("""
- id: r
  cause: exit-error
  when: {fact: container.name, op: present}
""")
    problems = errors_of(text)
    assert sorted(problems) == sorted(
        f"team.yaml:{line_of(text, 'id: r')}: rule acme/r: missing required key {key!r}"
        for key in ("severity", "title", "message"))


@pytest.mark.parametrize("pattern", [r"(\w+) \1", r"(?P<a>x)(?P=a)", r"foo(?=bar)", r"foo(?!bar)", r"(?<=a)b"])
def test_bad_regex_is_a_load_error(pattern):
    text = pack_text(VALID_RULE.format(id="r").replace(
        "{fact: container.state.exit_code, op: eq, value: 1}",
        "{fact: container.state.error, op: regex, value: '%s'}" % pattern))
    error = only_error(text)
    assert error.startswith(f"team.yaml:{line_of(text, 'op: regex')}: rule acme/r: when.value: invalid regular expression")
    assert "no backreferences or lookaround" in error


def test_bad_jmespath_is_a_load_error():
    text = pack_text(VALID_RULE.format(id="r").replace("container.state.exit_code", "container..exit_code"))
    assert only_error(text).startswith(f"team.yaml:{line_of(text, 'container..')}: rule acme/r: when.fact: "
                                       "invalid expression 'container..exit_code'")


def test_bad_template_is_a_load_error():
    text = pack_text(VALID_RULE.format(id="r").replace('"{container.name} exited"', '"{container.name exited"'))
    assert only_error(text).startswith(f"team.yaml:{line_of(text, 'message:')}: rule acme/r: message: unclosed '{{'")


def test_duplicate_rule_id_in_one_pack():
    text = pack_text(VALID_RULE.format(id="same") + VALID_RULE.format(id="other") + VALID_RULE.format(id="same"))
    lines = [i for i, line in enumerate(text.splitlines(), 1) if "id: same" in line]
    assert only_error(text) == (f"team.yaml:{lines[1]}: rule acme/same: id: duplicate rule id "
                                f"(first defined at line {lines[0]})")


def test_duplicate_rule_id_is_reported_even_when_a_rule_has_other_errors():
    broken = VALID_RULE.format(id="same").replace("severity: error", "severity: critical")
    text = pack_text(broken + VALID_RULE.format(id="same"))
    problems = errors_of(text)
    assert any("duplicate rule id" in p for p in problems), problems


def test_same_rule_in_two_files(tmp_path):
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text(pack_text(VALID_RULE.format(id="dup") + VALID_RULE.format(id="only-a")))
    second.write_text(pack_text(VALID_RULE.format(id="only-b") + VALID_RULE.format(id="dup")))
    with pytest.raises(RulePackError) as caught:
        packs.load_all([str(first), str(second)], builtin=False, entry_points=False)
    (problem,) = caught.value.problems
    line_a = line_of(first.read_text(), "id: dup")
    line_b = line_of(second.read_text(), "id: dup")
    assert problem == f"rule acme/dup is defined twice: in {first}:{line_a} and in {second}:{line_b}"
    # The same two files in a directory: the same error.
    with pytest.raises(RulePackError) as again:
        packs.load_all([str(tmp_path)], builtin=False, entry_points=False)
    assert again.value.problems == [problem]
    # Different pack names are different rules.
    second.write_text(pack_text(VALID_RULE.format(id="dup"), name="other"))
    loaded = packs.load_all([str(tmp_path)], builtin=False, entry_points=False)
    assert sorted(r.qualified_id for r in packs.all_rules(loaded)) == ["acme/dup", "acme/only-a", "other/dup"]


def test_a_user_pack_cannot_redefine_a_builtin_rule(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(pack_text(VALID_RULE.format(id="bind-loopback"), name="dockdoc"))
    with pytest.raises(RulePackError) as caught:
        packs.load_all([str(mine)], entry_points=False)
    (problem,) = caught.value.problems
    assert problem.startswith("rule dockdoc/bind-loopback is defined twice: in builtin:network.yaml:")
    assert problem.endswith(f"and in {mine}:{line_of(mine.read_text(), 'bind-loopback')}")


def test_every_error_of_every_file_reaches_the_exception(tmp_path):
    (tmp_path / "one.yaml").write_text(pack_text(VALID_RULE.format(id="r").replace("severity: error", "severity: x")))
    (tmp_path / "two.yaml").write_text("pack: acme\nrules: [")
    with pytest.raises(RulePackError) as caught:
        packs.load_all([str(tmp_path)], builtin=False, entry_points=False)
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 'one.yaml'}:")
    assert problems[1].startswith(f"{tmp_path / 'two.yaml'}:2: not valid YAML")
    assert str(caught.value).startswith(problems[0]) and "(and 1 more)" in str(caught.value)


@pytest.mark.parametrize("requires,ok", [(">=0.1", True), ("<1", True), (">=99", False), ("<0.1", False)])
def test_requires(requires, ok):
    text = f'pack: acme\nrequires: "{requires}"\nrules:\n' + VALID_RULE.format(id="r")
    problems = errors_of(text)
    if ok:
        assert problems == []
    else:
        from doctor import __version__

        assert problems == [f"team.yaml:2: requires: this pack requires dockdoc {requires}, "
                            f"but this is dockdoc {__version__}"]


def test_requires_that_is_not_a_range():
    text = 'pack: acme\nrequires: "newest please"\nrules:\n' + VALID_RULE.format(id="r")
    assert only_error(text).startswith("team.yaml:2: requires: 'newest please' is not a version range")


def test_not_yaml_gives_the_line():
    text = "pack: acme\nrules:\n  - id: r\n    when: {fact: x, op: eq\n    message: m\n"
    (problem,) = errors_of(text)
    assert re.match(r"^team\.yaml:\d+: not valid YAML", problem), problem


# ---- safety: untrusted YAML ---------------------------------------------------------------------

def test_python_object_apply_runs_nothing(tmp_path):
    proof = tmp_path / "pwned"
    text = f'pack: acme\nrules: !!python/object/apply:os.system ["touch {proof}"]\n'
    pack_file = tmp_path / "evil.yaml"
    pack_file.write_text(text)
    found, problems = packs.load_path(str(pack_file))
    assert found == []
    assert problems == [f"{pack_file}:2: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed "
                        "(only plain YAML values)"]
    assert not proof.exists()


@pytest.mark.parametrize("payload", [
    "!!python/object/new:os.system [echo hi]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!include /etc/passwd",
    "!custom {a: 1}",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
])
def test_any_nonstandard_tag_is_an_error(payload):
    problems = errors_of(f"pack: acme\nrules:\n  - id: r\n    title: {payload}\n")
    assert len(problems) == 1
    assert problems[0].startswith("team.yaml:4: tag ") and problems[0].endswith("is not allowed (only plain YAML values)")


def _laughs(levels: int, width: int) -> str:
    lines = ['lol0: &lol0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * width) + "]")
    return "pack: acme\n" + "\n".join(lines) + f"\nrules: *lol{levels}\n"


def test_billion_laughs_is_rejected():
    # 9 levels of 9 aliases: 9**9 (387 million) values once expanded, a few hundred bytes of text.
    text = _laughs(9, 9)
    assert len(text) < 1000
    (problem,) = errors_of(text)
    assert "document too large once aliases are expanded" in problem


def test_a_few_aliases_are_fine():
    text = pack_text("""
- id: r
  cause: exit-error
  severity: error
  title: t
  when: &cond {fact: container.name, op: eq, value: web}
  unless: {not: *cond}
  message: m
""")
    pack, problems = packs.load_text(text, "team.yaml")
    assert problems == []
    findings, _ = evaluate_rule(pack.rules[0], container("web"), {})
    assert len(findings) == 1


def test_file_over_one_mib_is_rejected(tmp_path):
    big = tmp_path / "big.yaml"
    valid = pack_text(VALID_RULE.format(id="r"))
    assert errors_of(valid) == []
    big.write_text(valid + "# padding\n" * ((1 << 20) // 10 + 1))
    assert big.stat().st_size > 1 << 20
    found, problems = packs.load_path(str(big))
    assert found == []
    assert problems == [f"{big}: file larger than {1 << 20} bytes"]


def test_deeply_nested_yaml_is_rejected():
    assert errors_of("pack: acme\nrules: " + "[" * 63 + "]" * 63 + "\n")[0].endswith(
        "rules[0]: a rule must be a mapping with id, cause, severity, title, when, message")
    assert errors_of("pack: acme\nrules: " + "[" * 70 + "]" * 70 + "\n") == ["team.yaml:2: nested deeper than 64 levels"]
    # deeper than the parser's own recursion: still one error, not a crash
    (problem,) = errors_of("pack: acme\nrules: " + "[" * 1500 + "]" * 1500 + "\n")
    assert problem.endswith("nested deeper than 64 levels")


def test_duplicate_yaml_keys_are_rejected():
    text = pack_text(VALID_RULE.format(id="r") + "  when: {fact: container.name, op: eq, value: web}\n")
    assert only_error(text) == f"team.yaml:{line_of(text, 'value: web')}: duplicate key 'when'"


def _nested_not(depth: int) -> str:
    condition = "{fact: container.name, op: eq, value: web}"
    for _ in range(depth):
        condition = "{not: " + condition + "}"
    return pack_text(VALID_RULE.format(id="deep").replace(
        "{fact: container.state.exit_code, op: eq, value: 1}", condition))


def test_conditions_nested_deeper_than_16_are_rejected():
    assert errors_of(_nested_not(16)) == []  # the limit itself is fine
    error = only_error(_nested_not(17))
    assert error.startswith(f"team.yaml:{line_of(_nested_not(17), 'when:')}: rule acme/deep: when" + ".not" * 17 + ":")
    assert error.endswith("conditions nested deeper than 16 levels")
    assert only_error(_nested_not(60)).endswith("conditions nested deeper than 16 levels")


def _wide(leaves: int, unless_leaves: int = 0) -> str:
    def group(kind, n):
        return "\n".join([f"  {kind}:", "    any:"] +
                         [f"      - {{fact: container.name, op: eq, value: n{i}}}" for i in range(n)])
    rule = "- id: wide\n  cause: exit-error\n  severity: error\n  title: t\n  message: m\n" + group("when", leaves)
    if unless_leaves:
        rule += "\n" + group("unless", unless_leaves)
    return pack_text(rule)


def test_more_than_200_condition_nodes_are_rejected():
    assert errors_of(_wide(199)) == []  # 199 leaves + the `any`: 200 nodes
    error = only_error(_wide(200))
    assert error.endswith("more than 200 conditions in one rule")
    assert ": rule acme/wide: when.any[199]: " in error
    assert only_error(_wide(600)).endswith("more than 200 conditions in one rule")


def test_condition_budget_covers_when_and_unless_together():
    assert errors_of(_wide(100, 98)) == []  # 101 + 99 = 200
    assert only_error(_wide(100, 99)).endswith("more than 200 conditions in one rule")


def test_pathological_regex_is_linear():
    rule = one_rule("{fact: container.logs.lines, op: any-match, value: '(a+)+$'}",
                    message="{match.text}")
    lines = ["a" * 100_000 + "b"] * 3
    findings, unknown = evaluate_rule(rule, container("web", logs=lines), {})
    assert (findings, unknown) == ([], False)
    findings, _ = evaluate_rule(rule, container("web", logs=["a" * 100_000]), {})
    assert len(findings) == 1
    other = one_rule("{fact: container.state.error, op: regex, value: '^(a|aa)+$'}")
    error = "a" * 100_000 + "!"
    assert evaluate_rule(other, container("web", state=exited_state(1, error=error)), {}) == ([], False)


def test_templates_reach_only_the_context():
    rule = one_rule("{fact: container.name, op: eq, value: web}",
                    message="{__class__}|{container.__class__}|{container.__dict__}|{__builtins__}|{container.name}",
                    evidence=["{__import__}", "env: {environ}"],
                    fix="{container.__init__.__globals__}")
    (finding,), _ = evaluate_rule(rule, container("web"), {})
    assert finding["message"] == "?|?|?|?|web"
    assert finding["evidence"] == []
    assert finding["fix"] == "?"


def test_templates_cannot_read_files_or_environment(monkeypatch):
    monkeypatch.setenv("DOCKDOC_TEST_SECRET", "s3cret")
    rule = one_rule("{fact: container.name, op: eq, value: web}",
                    message="{DOCKDOC_TEST_SECRET} {'/etc/passwd'} {container.env_keys}")
    (finding,), _ = evaluate_rule(rule, container("web"), {})
    assert finding["message"] == "? /etc/passwd PATH"
    assert "s3cret" not in str(finding)
