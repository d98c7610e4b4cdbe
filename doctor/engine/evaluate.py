"""Evaluate rules over facts, with three-valued logic: a condition on a fact that could not be
collected is *unknown*, and an unknown rule produces no finding (it is counted instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from doctor.engine.conditions import forget_joined
from doctor.engine.packs import SEVERITY_RANK, Leaf, Rule
from doctor.engine.templates import search

MAX_ITEMS = 1000  # `each` over more items than this is cut: bounded work per container and rule


def _eval(node, context: dict, unknown: set, matches: dict):
    """True, False or None (unknown). Regex groups of the matching leaves land in `matches`."""
    if isinstance(node, Leaf):
        if unknown and node.fields & unknown:
            return None
        result = node.test(search(node.expression, context), node.value)
        if isinstance(result, dict):
            matches.update(result)
        return bool(result)
    if node.kind == "not":
        inner = _eval(node.children[0], context, unknown, {})
        return None if inner is None else not inner
    saw_unknown = False
    if node.kind == "all":
        for child in node.children:
            result = _eval(child, context, unknown, matches)
            if result is False:
                return False
            saw_unknown |= result is None
        return None if saw_unknown else True
    for child in node.children:  # any
        found: dict = {}
        result = _eval(child, context, unknown, found)
        if result is True:
            matches.update(found)
            return True
        saw_unknown |= result is None
    return None if saw_unknown else False


@dataclass
class Result:
    findings: list = field(default_factory=list)
    # (container id, rule id) pairs whose answer was unknown because a fact was missing
    unknown: list = field(default_factory=list)


def evaluate(snapshot: dict, rules: list[Rule]) -> Result:
    result = Result()
    host = snapshot.get("host") or {}
    try:
        for container in snapshot["containers"]:
            found = []
            for rule in rules:
                findings, unknown = evaluate_rule(rule, container, host)
                found.extend((rule, finding) for finding in findings)
                if unknown:
                    result.unknown.append((container["id"], rule.qualified_id))
            result.findings.extend(_without_superseded(found))
    finally:
        forget_joined()
    result.findings.sort(key=sort_key)
    return result


def _without_superseded(found: list) -> list[dict]:
    """A generic finding ("exited with code 1") yields to a specific one on the same container
    ("DATABASE_URL is not set") when its rule says `superseded_by` that cause."""
    causes = {finding["cause"] for _, finding in found}
    return [finding for rule, finding in found if not causes.intersection(rule.superseded_by)]


def evaluate_rule(rule: Rule, container: dict, host: dict) -> tuple[list[dict], bool]:
    """The findings of one rule on one container, and whether its answer was unknown."""
    unknown = set(container.get("unknown") or ())
    base = {"container": container, "host": host}
    if rule.each is None:
        items = [None]
    else:
        if unknown and rule.each_fields & unknown:
            return [], True
        items = search(rule.each, container)  # `each` names a collection of the container's facts
        if not isinstance(items, list):
            return [], False
        items = items[:MAX_ITEMS]
    findings, saw_unknown = [], False
    for item in items:
        context = dict(base, item=item) if item is not None else base
        matches: dict = {}
        outcome = _eval(rule.when, context, unknown, matches)
        if outcome is None:
            saw_unknown = True
        elif outcome and not (rule.unless is not None and _eval(rule.unless, context, unknown, {}) is True):
            # `unless` only silences a finding when it is known to hold: unknown keeps the finding.
            if matches:
                context = dict(context, match=matches)
            findings.append(render(rule, container, context, item))
    # Unknown on some items and found on others is still unknown for the rest: the watch must not
    # resolve an open finding on an item it could not check this time.
    return findings, saw_unknown


def render(rule: Rule, container: dict, context: dict, item) -> dict:
    evidence = []
    for template in rule.evidence:
        evidence.extend(template.render_lines(context))
    finding = {
        "rule": rule.qualified_id,
        "cause": rule.cause,
        "severity": rule.severity,
        "container": {"id": container["id"], "name": container["name"]},
        "title": rule.title,
        "message": rule.message.render(context),
        "evidence": evidence,
        "fix": rule.fix.render(context) if rule.fix else None,
        "docs": rule.docs,
    }
    key = _item_key(item)
    if key is not None:
        finding["item"] = key  # what the finding is about, stable across scans (watch fingerprints it)
        if isinstance(item, dict) and "port" in item:
            finding["port"] = key
    return finding


# Item fields that name what an `each` item is about, most specific first.
_ITEM_NAMES = ("address", "name", "host", "id", "path")


def _item_key(item) -> str | None:
    if not isinstance(item, dict):
        return None if item is None else str(item)[:200]
    if "port" in item:
        return f"{item['port']}/{item.get('proto', 'tcp')}"
    for name in _ITEM_NAMES:
        if isinstance(item.get(name), (str, int)) and item[name] != "":
            return str(item[name])[:200]
    return None


def sort_key(finding: dict):
    return (-SEVERITY_RANK[finding["severity"]], finding["container"]["name"], finding["rule"],
            finding.get("port") or "")
