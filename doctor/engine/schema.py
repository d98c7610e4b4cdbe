"""The rule-pack format as a JSON Schema (draft 2020-12), printed by `dockdoc rules schema`.

Built from the same tables the loader uses (operators, causes, severities, names, limits), so the
schema cannot drift from `packs.py`. It lets an editor complete and check a pack as it is typed; the
loader (`dockdoc rules validate`) stays the authority and also checks what a JSON Schema cannot say:
that a new cause is under the pack's own prefix, that regexes compile (RE2), that expressions and
templates parse (JMESPath), that `requires` admits this dockdoc, the 200-node and 16-level limits
on a rule's conditions, and unique rule ids.
"""

from __future__ import annotations

import json

from doctor.engine import conditions, packs
from doctor.engine.causes import CAUSES

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_NAME = packs.NAME.pattern
# "<pack>/<name>": a cause of the pack's own (the prefix must be this pack's name; the loader checks that).
_PACK_CAUSE = "^" + _NAME.strip("^$") + "/" + _NAME.strip("^$") + "$"

_SCALAR = {"type": ["string", "number", "boolean"]}
_LIST_OF_SCALARS = {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}}
_NUMBER_OR_STRING = {"type": ["number", "string"]}
_REGEX = {"type": "string", "maxLength": conditions.MAX_PATTERN,
          "description": "An RE2 regular expression (searched, not anchored; no backreferences or lookaround)."}
_NOT_NULL = {"not": {"type": "null"}}

# What `value` each operator takes: the schema side of the value checks in conditions.OPERATORS.
_VALUE_BY_CHECK = {
    conditions._scalar: (True, _SCALAR),
    conditions._number_value: (True, _NUMBER_OR_STRING),
    conditions._list: (True, _LIST_OF_SCALARS),
    conditions._any_value: (True, _NOT_NULL),
    conditions.compile_regex: (True, _REGEX),
    conditions.compile_line_pattern: (True, _REGEX),
    conditions._no_value: (False, {"type": "null"}),
}


def _operator_rules() -> list[dict]:
    """One if/then per operator: its `value` (required or forbidden) and that value's type."""
    out = []
    for name, (check, _test) in conditions.OPERATORS.items():
        # An operator added without an entry here still gets a (permissive) schema.
        required, value_schema = _VALUE_BY_CHECK.get(check, (False, {}))
        then: dict = {"properties": {"value": value_schema}}
        if required:
            then["required"] = ["value"]
        out.append({"if": {"properties": {"op": {"const": name}}, "required": ["op"]}, "then": then})
    return out


def _group(kind: str, description: str) -> dict:
    body = {"$ref": "#/$defs/condition"} if kind == "not" else {
        "type": "array", "minItems": 1, "items": {"$ref": "#/$defs/condition"}}
    return {
        "type": "object",
        "description": description,
        "properties": {kind: body},
        "required": [kind],
        "additionalProperties": False,
    }


def _build() -> dict:
    template = {"type": "string", "description": "Text with {expression} holes (JMESPath over container, item, "
                                                  "host, match); {{ and }} are literal braces."}
    example = {
        "type": "object",
        "description": "A fragment of facts: the container (and optionally host) a rule is tried on.",
        "properties": {
            "container": {"type": "object"},
            "host": {"type": ["object", "null"]},
        },
        "required": ["container"],
        "additionalProperties": False,
    }
    examples_list = {"type": "array", "maxItems": packs.MAX_EXAMPLES, "items": {"$ref": "#/$defs/example"}}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "dockdoc rule pack",
        "description": "A dockdoc rule pack (docs/rules.md). `dockdoc rules validate` is the authority: it also "
                       "checks expressions, regexes, the pack's own cause prefix, `requires` and the "
                       f"limits of {packs.MAX_CONDITION_NODES} conditions and {packs.MAX_CONDITION_DEPTH} "
                       "levels per rule.",
        "type": "object",
        "properties": {
            "pack": {"type": "string", "pattern": _NAME,
                     "description": "The pack's name; its rules are referred to as <pack>/<id>."},
            "version": {"type": ["string", "null"], "pattern": packs.SEMVER.pattern,
                        "description": "Semantic version of the pack, as text (quote it in YAML)."},
            "description": {"type": ["string", "null"]},
            "requires": {"type": ["string", "null"],
                         "description": "The dockdoc versions this pack works with, a PEP 440 range such as "
                                        "\">=0.1\"."},
            "rules": {"type": "array", "minItems": 1, "maxItems": packs.MAX_RULES,
                      "items": {"$ref": "#/$defs/rule"}},
        },
        "required": ["pack", "rules"],
        "additionalProperties": False,
        "$defs": {
            "rule": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": _NAME},
                    "cause": {"$ref": "#/$defs/cause"},
                    "severity": {"enum": list(packs.SEVERITIES)},
                    "title": {"type": "string"},
                    "each": {"type": ["string", "null"],
                             "description": "A JMESPath expression over the container's facts naming a list "
                                            "(such as 'ports'); the rule runs once per item, as `item`."},
                    "when": {"$ref": "#/$defs/condition"},
                    "unless": {"anyOf": [{"$ref": "#/$defs/condition"}, {"type": "null"}],
                               "description": "When this is known to hold, the rule gives no finding."},
                    "superseded_by": {"type": ["array", "null"], "items": {"type": "string"},
                                      "description": "Causes that, found on the same container, make this "
                                                     "rule's finding redundant: it is dropped."},
                    "message": template,
                    "evidence": {"anyOf": [template, {"type": "array", "items": template}]},
                    "fix": {"anyOf": [template, {"type": "null"}]},
                    "docs": {"type": ["string", "null"], "pattern": "^https?://"},
                    "examples": {
                        "type": ["object", "null"],
                        "properties": {"match": examples_list, "no_match": examples_list},
                        "additionalProperties": False,
                    },
                },
                "required": list(packs.REQUIRED_RULE_KEYS),
                "additionalProperties": False,
            },
            "cause": {
                "description": "A cause from the vocabulary, or '<pack>/<name>' for a cause of this pack's own "
                               "(the prefix must be this pack's name).",
                "anyOf": [
                    {"enum": sorted(CAUSES)},
                    {"type": "string", "pattern": _PACK_CAUSE},
                ],
            },
            "condition": {
                "oneOf": [
                    _group("all", "True when every condition is true."),
                    _group("any", "True when at least one condition is true."),
                    _group("not", "True when the condition is false."),
                    {"$ref": "#/$defs/leaf"},
                ],
            },
            "leaf": {
                "type": "object",
                "description": "Compare the value of `fact` (a JMESPath expression over container, item and "
                               "host) with `value` using `op`.",
                "properties": {
                    "fact": {"type": "string", "minLength": 1},
                    "op": {"enum": list(conditions.OPERATORS)},
                    "value": {},
                },
                "required": ["fact", "op"],
                "additionalProperties": False,
                "allOf": _operator_rules(),
            },
            "example": example,
        },
    }


PACK_SCHEMA: dict = _build()


def render() -> str:
    """The schema as indented JSON, for `dockdoc rules schema`."""
    return json.dumps(PACK_SCHEMA, indent=2) + "\n"
