"""Running a rule's own examples (`dockdoc rules test`): no Docker needed."""

from __future__ import annotations

from dataclasses import dataclass, field

from doctor.engine.evaluate import evaluate_rule
from doctor.engine.packs import Rule


@dataclass
class Outcome:
    rule: str
    checked: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _container(fragment: dict, index: int) -> dict:
    # A fragment names only what the rule reads; findings still need an id and a name to render.
    container = {"id": f"example{index}", "name": f"example{index}", "display_name": f"example{index}",
                 "unknown": {}}
    container.update(fragment)
    return container


def run(rules: list[Rule]) -> list[Outcome]:
    outcomes = []
    for rule in rules:
        outcome = Outcome(rule.qualified_id)
        for kind in ("match", "no_match"):
            for index, example in enumerate(rule.examples.get(kind) or []):
                outcome.checked += 1
                findings, _unknown = evaluate_rule(rule, _container(example["container"], index),
                                                   example.get("host") or {})
                if kind == "match" and not findings:
                    outcome.problems.append(f"examples.match[{index}] did not match")
                elif kind == "no_match" and findings:
                    outcome.problems.append(f"examples.no_match[{index}] matched: {findings[0]['message']}")
        if not outcome.checked:
            outcome.problems.append("no examples: add examples.match and examples.no_match")
        outcomes.append(outcome)
    return outcomes
