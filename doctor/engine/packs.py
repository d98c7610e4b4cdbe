"""Rule packs: find, load and validate them, up front, reporting every error with file:line and
a breadcrumb to the place (`team.yaml:14: rule acme/bind: when.all[1].op: unknown operator 'equal'
(did you mean 'eq'?)`). Nothing fails later at scan time for a reason visible at load time.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from doctor import __version__, safeyaml
from doctor.engine.causes import CAUSES
from doctor.engine.conditions import OPERATORS, BadValue
from doctor.engine.templates import Template, TemplateError, compile_expression, field_names
from doctor.errors import RulePackError

SEVERITIES = ("info", "warning", "error")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
PACK_KEYS = {"pack", "version", "description", "requires", "rules"}
RULE_KEYS = {"id", "cause", "severity", "title", "each", "when", "unless", "superseded_by", "message",
             "evidence", "fix", "docs", "examples"}
REQUIRED_RULE_KEYS = ("id", "cause", "severity", "title", "when", "message")
MAX_RULES = 500
MAX_CONDITION_NODES = 200
MAX_CONDITION_DEPTH = 16
MAX_EXAMPLES = 100
ENTRY_POINT_GROUP = "dockdoc.rules"


# ---- the compiled model -------------------------------------------------------------------

@dataclass
class Leaf:
    expression: object  # compiled JMESPath
    fact: str
    op: str
    value: object
    test: object
    fields: set


@dataclass
class Group:
    kind: str  # "all" | "any" | "not"
    children: list


@dataclass
class Rule:
    pack: str
    id: str
    cause: str
    severity: str
    title: str
    when: object
    unless: object | None  # a condition that, when true, explains the symptom better: no finding
    superseded_by: tuple  # causes that, found on the same container, make this finding redundant
    message: Template
    evidence: list
    fix: Template | None
    docs: str | None
    each: object | None
    each_text: str | None
    examples: dict
    origin: str
    line: int | None
    fields: set = field(default_factory=set)  # every fact name the rule reads
    each_fields: set = field(default_factory=set)  # the fact names its `each` reads

    @property
    def qualified_id(self) -> str:
        return f"{self.pack}/{self.id}"


@dataclass
class Pack:
    name: str
    version: str
    description: str
    requires: str | None
    rules: list
    origin: str


# ---- validation ---------------------------------------------------------------------------

class _Problems:
    """Collects every error, each rendered as `origin:line: [rule x: ]breadcrumb: message`."""

    def __init__(self, origin: str, doc: safeyaml.Document | None):
        self.origin = origin
        self.doc = doc
        self.items: list[str] = []

    def add(self, path: tuple, message: str, rule: str | None = None, breadcrumb: str | None = None):
        line = self.doc.line(path) if self.doc else None
        where = f"{self.origin}:{line}" if line else self.origin
        crumb = breadcrumb if breadcrumb is not None else _breadcrumb(path)
        parts = [where]
        if rule:
            parts.append(f"rule {rule}")
        if crumb:
            parts.append(crumb)
        self.items.append(": ".join(parts) + f": {message}")


def _breadcrumb(path: tuple) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + str(step)
    return out


def _suggest(word, choices) -> str:
    word = str(word)
    # A choice that the word starts with ('equal' -> 'eq') is the likeliest slip; then spelling.
    prefixed = sorted((c for c in choices if len(c) >= 2 and word.startswith(c)), key=len, reverse=True)
    close = prefixed or difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_pack(doc: safeyaml.Document, origin: str) -> tuple[Pack | None, list[str]]:
    """Validate and compile one pack document. Returns the pack (None if invalid) and every error."""
    problems = _Problems(origin, doc)
    data = doc.data
    if not isinstance(data, dict):
        problems.add((), "a rule pack must be a mapping with 'pack' and 'rules'")
        return None, problems.items
    for key in data:
        if key not in PACK_KEYS:
            problems.add((key,), f"unknown key {key!r}{_suggest(key, PACK_KEYS)}", breadcrumb=key)
    name = data.get("pack")
    if not isinstance(name, str) or not NAME.match(name):
        problems.add(("pack",), "'pack' is required: a lowercase name such as 'acme-web'", breadcrumb="pack")
        name = "?"
    version = data.get("version")
    if version is not None and (not isinstance(version, str) or not SEMVER.match(version)):
        problems.add(("version",), f"version {version!r} is not semver (such as '1.2.0'; quote it)",
                     breadcrumb="version")
    requires = data.get("requires")
    if requires is not None:
        _check_requires(requires, problems)
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        problems.add(("description",), "must be text", breadcrumb="description")
    rules_data = data.get("rules")
    rules: list[Rule] = []
    if not isinstance(rules_data, list) or not rules_data:
        problems.add(("rules",), "'rules' must be a non-empty list", breadcrumb="rules")
    elif len(rules_data) > MAX_RULES:
        problems.add(("rules",), f"more than {MAX_RULES} rules in one pack", breadcrumb="rules")
    else:
        seen: dict[str, int] = {}
        for index, rule_data in enumerate(rules_data):
            # Duplicates are checked on the raw ids, so that they are reported even beside other errors.
            rule_id = rule_data.get("id") if isinstance(rule_data, dict) else None
            if isinstance(rule_id, str) and rule_id in seen:
                problems.add(("rules", index, "id"),
                             f"duplicate rule id (first defined at line {seen[rule_id]})",
                             rule=f"{name}/{rule_id}", breadcrumb="id")
                continue
            if isinstance(rule_id, str):
                seen[rule_id] = doc.line(("rules", index)) or 0
            rule = _parse_rule(rule_data, name, ("rules", index), problems)
            if rule is not None:
                rules.append(rule)
    if problems.items:
        return None, problems.items
    return Pack(name, version or "0.0.0", description or "", requires, rules, origin), []


def _check_requires(requires, problems: _Problems) -> None:
    try:
        spec = SpecifierSet(str(requires))
    except InvalidSpecifier:
        problems.add(("requires",), f"{requires!r} is not a version range such as '>=0.1'", breadcrumb="requires")
        return
    if not spec.contains(Version(__version__), prereleases=True):
        problems.add(("requires",), f"this pack requires dockdoc {requires}, but this is dockdoc {__version__}",
                     breadcrumb="requires")


def _parse_rule(data, pack: str, path: tuple, problems: _Problems) -> Rule | None:
    if not isinstance(data, dict):
        problems.add(path, "a rule must be a mapping with id, cause, severity, title, when, message")
        return None
    rule_id = data.get("id")
    label = f"{pack}/{rule_id}" if isinstance(rule_id, str) else f"{pack}/rules[{path[-1]}]"
    before = len(problems.items)

    def bad(key, message, sub: tuple = ()):
        problems.add(path + (key,) + sub, message, rule=label, breadcrumb=_breadcrumb((key,) + sub))

    for key in data:
        if key not in RULE_KEYS:
            bad(key, f"unknown key {key!r}{_suggest(key, RULE_KEYS)}")
    for key in REQUIRED_RULE_KEYS:
        if key not in data:
            problems.add(path, f"missing required key {key!r}", rule=label, breadcrumb="")
    if "id" in data and (not isinstance(rule_id, str) or not NAME.match(rule_id)):
        bad("id", "must be a lowercase name such as 'bind-loopback'")
    cause = data.get("cause")
    if "cause" in data:
        if not isinstance(cause, str):
            bad("cause", "must be a cause name")
        elif "/" in cause:
            prefix, _, rest = cause.partition("/")
            if prefix != pack or not NAME.match(rest):
                bad("cause", f"a new cause must be named '{pack}/<name>' (under this pack's own prefix)")
        elif cause not in CAUSES:
            bad("cause", f"unknown cause {cause!r}{_suggest(cause, CAUSES)}; "
                         f"use one from the cause vocabulary or '{pack}/<name>'")
    severity = data.get("severity")
    if "severity" in data and severity not in SEVERITIES:
        bad("severity", f"must be one of {', '.join(SEVERITIES)}{_suggest(severity, SEVERITIES)}")
    for key in ("title", "message"):
        if key in data and not isinstance(data[key], str):
            bad(key, "must be text")

    fields: set = set()
    each_fields: set = set()
    each = each_text = None
    if data.get("each") is not None:
        each_text = data["each"]
        if not isinstance(each_text, str):
            bad("each", "must be an expression naming a list in the container's facts, such as 'ports'")
        else:
            try:
                each = compile_expression(each_text)
                each_fields = field_names(each.parsed)
                fields |= each_fields
            except TemplateError as exc:
                bad("each", str(exc))

    when = unless = None
    counter = [0]  # shared: the node budget covers `when` and `unless` together
    if "when" in data:
        when = _parse_condition(data["when"], path + ("when",), ("when",), 0, counter, label, problems)
        if when is not None:
            fields |= _condition_fields(when)
    if data.get("unless") is not None:
        unless = _parse_condition(data["unless"], path + ("unless",), ("unless",), 0, counter, label, problems)

    templates = {}
    for key in ("message", "fix"):
        if isinstance(data.get(key), str):
            try:
                templates[key] = Template(data[key])
            except TemplateError as exc:
                bad(key, str(exc))
        elif data.get(key) is not None and key == "fix":
            bad(key, "must be text")
    evidence = []
    raw_evidence = data.get("evidence", [])
    if isinstance(raw_evidence, str):
        raw_evidence = [raw_evidence]
    if not isinstance(raw_evidence, list):
        bad("evidence", "must be a list of templates")
    else:
        for index, text in enumerate(raw_evidence):
            if not isinstance(text, str):
                bad("evidence", "must be text", (index,))
                continue
            try:
                evidence.append(Template(text))
            except TemplateError as exc:
                bad("evidence", str(exc), (index,))
    superseded_by = data.get("superseded_by") or []
    if not isinstance(superseded_by, list) or not all(isinstance(c, str) for c in superseded_by):
        bad("superseded_by", "must be a list of causes")
        superseded_by = []
    for index, other in enumerate(superseded_by):
        if other not in CAUSES and not other.startswith(f"{pack}/"):
            bad("superseded_by", f"unknown cause {other!r}{_suggest(other, CAUSES)}", (index,))
    docs = data.get("docs")
    if docs is not None and not (isinstance(docs, str) and re.match(r"^https?://", docs)):
        bad("docs", "must be an http(s) URL")
    examples = data.get("examples") or {}
    _check_examples(examples, lambda message, sub=(): bad("examples", message, sub))

    if len(problems.items) > before:
        return None
    return Rule(
        pack=pack, id=rule_id, cause=cause, severity=severity, title=data["title"], when=when, unless=unless,
        superseded_by=tuple(superseded_by),
        message=templates["message"], evidence=evidence, fix=templates.get("fix"), docs=docs,
        each=each, each_text=each_text, examples=examples, origin=problems.origin,
        line=problems.doc.line(path) if problems.doc else None, fields=fields, each_fields=each_fields,
    )


def _check_examples(examples, bad) -> None:
    if not isinstance(examples, dict):
        bad("must be a mapping with 'match' and 'no_match' lists")
        return
    for key, value in examples.items():
        if key not in ("match", "no_match"):
            bad(f"unknown key {key!r}{_suggest(key, ('match', 'no_match'))}", (key,))
            continue
        if not isinstance(value, list):
            bad("must be a list of fact fragments", (key,))
            continue
        if len(value) > MAX_EXAMPLES:
            bad(f"more than {MAX_EXAMPLES} examples", (key,))
        for index, example in enumerate(value):
            if not isinstance(example, dict) or not isinstance(example.get("container"), dict):
                bad("each example must be a mapping with a 'container' mapping (and optionally 'host')",
                    (key, index))
            elif example.get("host") is not None and not isinstance(example["host"], dict):
                bad("'host' must be a mapping", (key, index, "host"))
            elif set(example) - {"container", "host"}:
                extra = sorted(set(example) - {"container", "host"})[0]
                bad(f"unknown key {extra!r} (examples hold 'container' and 'host')", (key, index))


def _parse_condition(data, path: tuple, crumb: tuple, depth: int, counter: list, label: str,
                     problems: _Problems):
    counter[0] += 1

    def bad(message, extra: tuple = ()):
        problems.add(path + extra, message, rule=label, breadcrumb=_breadcrumb(crumb + extra))

    if depth > MAX_CONDITION_DEPTH:
        bad(f"conditions nested deeper than {MAX_CONDITION_DEPTH} levels")
        return None
    if counter[0] > MAX_CONDITION_NODES:
        if counter[0] == MAX_CONDITION_NODES + 1:
            bad(f"more than {MAX_CONDITION_NODES} conditions in one rule")
        return None
    if not isinstance(data, dict):
        bad("a condition must be a mapping: {fact, op, value} or all/any/not")
        return None
    groups = [k for k in ("all", "any", "not") if k in data]
    if groups:
        if len(data) != 1:
            bad(f"'{groups[0]}' must be the only key of its condition")
            return None
        kind = groups[0]
        if kind == "not":
            child = _parse_condition(data["not"], path + ("not",), crumb + ("not",), depth + 1, counter,
                                     label, problems)
            return Group("not", [child]) if child is not None else None
        items = data[kind]
        if not isinstance(items, list) or not items:
            bad(f"'{kind}' must be a non-empty list of conditions", (kind,))
            return None
        children = [
            _parse_condition(item, path + (kind, i), crumb + (kind, i), depth + 1, counter, label, problems)
            for i, item in enumerate(items)
        ]
        if any(child is None for child in children):
            return None
        # Cheap tests first: all/any stop at the first false/true child, so a state check can
        # spare a regex over 200 log lines. Kleene all/any give the same answer in any order.
        return Group(kind, sorted(children, key=_cost))
    ok = True
    for key in data:
        if key not in ("fact", "op", "value"):
            bad(f"unknown key {key!r}{_suggest(key, ('fact', 'op', 'value', 'all', 'any', 'not'))}", (key,))
            ok = False
    fact, op = data.get("fact"), data.get("op")
    expression = None
    if not isinstance(fact, str) or not fact:
        bad("'fact' is required: a JMESPath expression such as 'container.state.status'", ("fact",))
        ok = False
    else:
        try:
            expression = compile_expression(fact)
        except TemplateError as exc:
            bad(str(exc), ("fact",))
            ok = False
    if op not in OPERATORS:
        bad(f"unknown operator {op!r}{_suggest(op, OPERATORS)}" if op is not None else
            f"'op' is required: one of {', '.join(OPERATORS)}", ("op",))
        return None
    check, test = OPERATORS[op]
    try:
        value = check(data.get("value"))
    except BadValue as exc:
        bad(f"{exc} (operator {op!r})", ("value",))
        return None
    if not ok:
        return None
    return Leaf(expression, fact, op, value, test, field_names(expression.parsed))


def _cost(node) -> int:
    if isinstance(node, Leaf):
        return 2 if node.op in ("regex", "any-match") else 0
    return 1 + max(_cost(child) for child in node.children)


def _condition_fields(node) -> set:
    if isinstance(node, Leaf):
        return set(node.fields)
    out = set()
    for child in node.children:
        out |= _condition_fields(child)
    return out


# ---- finding packs ------------------------------------------------------------------------

def load_text(text, origin: str) -> tuple[Pack | None, list[str]]:
    try:
        doc = safeyaml.load(text)
    except safeyaml.YamlError as exc:
        where = f"{origin}:{exc.line}" if exc.line else origin
        return None, [f"{where}: {exc}"]
    return parse_pack(doc, origin)


def _pack_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_path(path: str) -> tuple[list[Pack], list[str]]:
    """Every pack in a file or a directory (its *.yaml/*.yml files, not recursive)."""
    target = Path(path)
    if not target.exists():
        return [], [f"{path}: no such file or directory"]
    packs, errors = [], []
    for file in _pack_files(target):
        try:
            with open(file, "rb") as handle:
                raw = handle.read(safeyaml.MAX_BYTES + 1)
        except OSError as exc:
            errors.append(f"{file}: cannot read: {exc.strerror}")
            continue
        pack, problems = load_text(raw, str(file))
        errors.extend(problems)
        if pack:
            packs.append(pack)
    return packs, errors


def builtin_sources() -> list[tuple[str, bytes]]:
    """The packs shipped inside the wheel (rules/ in the source tree, doctor/rules installed)."""
    root = importlib.resources.files("doctor.rules")
    return [
        (f"builtin:{entry.name}", entry.read_bytes())
        for entry in sorted(root.iterdir(), key=lambda e: e.name)
        if entry.name.endswith((".yaml", ".yml"))
    ]


def entry_point_sources() -> tuple[list[tuple[str, bytes]], list[str]]:
    """Packs installed as Python packages: entry point group `dockdoc.rules`, each naming a
    package whose *.yaml files are packs (`acme = "acme_dockdoc_rules"`). Only its data files are
    read; locating them imports the package's __init__, as any installed plugin would.
    """
    sources, errors = [], []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            root = importlib.resources.files(entry.value.split(":")[0])
            files = sorted((e for e in root.iterdir() if e.name.endswith((".yaml", ".yml"))), key=lambda e: e.name)
            sources.extend((f"{entry.name}:{f.name}", f.read_bytes()) for f in files)
        except (ImportError, OSError, TypeError) as exc:
            errors.append(f"entry point {entry.name} ({entry.value}): cannot read its packs: {exc}")
    return sources, errors


def load_all(paths: list[str] = (), builtin: bool = True, entry_points: bool = True) -> list[Pack]:
    """Built-in packs, then installed ones, then `paths`. Any error anywhere stops the load, with all
    of them listed: a broken pack must not silently drop its rules from a scan."""
    packs, errors = [], []
    sources = builtin_sources() if builtin else []
    if entry_points:
        installed, errors = entry_point_sources()
        sources += installed
    for origin, raw in sources:
        pack, problems = load_text(raw, origin)
        errors.extend(problems)
        if pack:
            packs.append(pack)
    seen_paths = set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen_paths:  # the same pack named twice (config and --rules) is one pack
            continue
        seen_paths.add(resolved)
        found, problems = load_path(path)
        packs.extend(found)
        errors.extend(problems)
    errors.extend(_duplicates(packs))
    if errors:
        raise RulePackError(errors, "run `dockdoc rules validate PATH` to see every problem")
    return packs


def _duplicates(packs: list[Pack]) -> list[str]:
    seen: dict[str, str] = {}
    errors = []
    for pack in packs:
        for rule in pack.rules:
            where = f"{rule.origin}:{rule.line}" if rule.line else rule.origin
            if rule.qualified_id in seen:
                errors.append(f"rule {rule.qualified_id} is defined twice: in {seen[rule.qualified_id]} and in {where}")
            else:
                seen[rule.qualified_id] = where
    return errors


def all_rules(packs: list[Pack]) -> list[Rule]:
    return [rule for pack in packs for rule in pack.rules]
