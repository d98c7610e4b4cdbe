"""The built-in packs: each rule carries its own examples, names a known cause, and says what to do."""

from __future__ import annotations

import dataclasses

import pytest

from doctor.engine import examples, packs
from doctor.engine.causes import CAUSES
from doctor.engine.evaluate import evaluate_rule

BUILTIN = packs.all_rules(packs.load_all(builtin=True, entry_points=False))
IDS = [rule.qualified_id for rule in BUILTIN]


def test_builtin_packs_load_and_hold_rules():
    assert len(BUILTIN) >= 20
    assert len(set(IDS)) == len(IDS)
    assert {origin for origin, _ in packs.builtin_sources()} >= {"builtin:network.yaml", "builtin:crash.yaml"}


@pytest.mark.parametrize("rule", BUILTIN, ids=IDS)
def test_rule_has_match_and_no_match_examples(rule):
    assert len(rule.examples.get("match") or []) >= 1, f"{rule.qualified_id}: no examples.match"
    assert len(rule.examples.get("no_match") or []) >= 1, f"{rule.qualified_id}: no examples.no_match"


@pytest.mark.parametrize("rule", BUILTIN, ids=IDS)
def test_rule_examples_pass(rule):
    (outcome,) = examples.run([rule])
    assert outcome.rule == rule.qualified_id
    assert outcome.checked == len(rule.examples["match"]) + len(rule.examples["no_match"])
    assert outcome.ok, outcome.problems


@pytest.mark.parametrize("rule", BUILTIN, ids=IDS)
def test_rule_cause_is_in_the_vocabulary(rule):
    assert rule.cause in CAUSES


@pytest.mark.parametrize("rule", BUILTIN, ids=IDS)
def test_rule_has_a_fix(rule):
    assert rule.fix is not None and rule.fix.text.strip()


@pytest.mark.parametrize("rule", BUILTIN, ids=IDS)
def test_match_examples_render_without_holes_in_the_message(rule):
    """A finding from the rule's own example names the container: the message template works."""
    for index, example in enumerate(rule.examples["match"]):
        container = {"id": f"example{index}", "name": f"example{index}", "unknown": {}, **example["container"]}
        findings, _ = evaluate_rule(rule, container, example.get("host") or {})
        assert findings
        for finding in findings:
            assert finding["message"].strip() and finding["fix"].strip()
            assert finding["rule"] == rule.qualified_id and finding["cause"] == rule.cause


def test_examples_run_catches_a_wrong_example():
    """The examples runner can fail: flip a rule's match and no_match and it must."""
    rule = next(r for r in BUILTIN if r.qualified_id == "dockdoc/oom-killed")
    flipped = dataclasses.replace(rule, examples={"match": rule.examples["no_match"],
                                                  "no_match": rule.examples["match"]})
    (outcome,) = examples.run([flipped])
    assert not outcome.ok
    assert outcome.problems[0] == "examples.match[0] did not match"
    assert outcome.problems[1].startswith("examples.no_match[0] matched: ")
    (empty,) = examples.run([dataclasses.replace(rule, examples={})])
    assert empty.problems == ["no examples: add examples.match and examples.no_match"]
