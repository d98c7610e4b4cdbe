"""The config file `dockdoc.yaml`: extra packs, disabled rules, severity overrides, ignores.

Found in the current directory, then in the user config directory (platformdirs: ~/.config/dockdoc
on Linux); `--config FILE` chooses one. Entries that name no known rule, pack or cause are errors
(a typo must not silently disable nothing), reported with file:line like a rule pack.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from doctor import safeyaml
from doctor.engine.packs import SEVERITIES, Rule
from doctor.errors import DockdocError

FILENAME = "dockdoc.yaml"
KEYS = {"packs", "disable", "severity", "ignore"}
IGNORE_KEYS = {"rule", "container", "reason", "until"}


class ConfigError(DockdocError):
    """The config file cannot be used; `problems` lists every error with file:line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


@dataclass
class Ignore:
    rule: str
    container: str
    reason: str
    until: _dt.date | None
    line: int | None

    def describe(self) -> str:
        until = f" until {self.until}" if self.until else ""
        return f"ignore {self.rule} on {self.container}{until} ({self.reason})"


@dataclass
class Config:
    path: str | None = None
    packs: list = field(default_factory=list)
    disable: list = field(default_factory=list)
    severity: dict = field(default_factory=dict)
    ignore: list = field(default_factory=list)


def find(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for candidate in (Path.cwd() / FILENAME, Path(platformdirs.user_config_dir("dockdoc")) / FILENAME):
        if candidate.is_file():
            return str(candidate)
    return None


def load(explicit: str | None = None) -> Config:
    path = find(explicit)
    if path is None:
        return Config()
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        doc = safeyaml.load(raw)
    except safeyaml.YamlError as exc:
        raise ConfigError([f"{path}:{exc.line or 1}: {exc}"]) from None
    return parse(doc, path)


def parse(doc: safeyaml.Document, path: str) -> Config:
    problems: list[str] = []

    def bad(where: tuple, message: str):
        problems.append(f"{path}:{doc.line(where) or 1}: {'.'.join(str(p) for p in where) or 'config'}: {message}")

    data = doc.data if doc.data is not None else {}
    config = Config(path=path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the config must be a mapping with packs, disable, severity, ignore"])
    for key in data:
        if key not in KEYS:
            bad((key,), f"unknown key (expected one of {', '.join(sorted(KEYS))})")
    base = Path(path).resolve().parent
    for index, pack in enumerate(_list(data, "packs", bad)):
        if isinstance(pack, str):
            config.packs.append(str(base / pack))  # relative to the config file, not the cwd
        else:
            bad(("packs", index), "must be a path")
    for index, entry in enumerate(_list(data, "disable", bad)):
        if isinstance(entry, str):
            config.disable.append((entry, doc.line(("disable", index))))
        else:
            bad(("disable", index), "must be a rule id, '<pack>/*' or a cause")
    severity = data.get("severity") or {}
    if not isinstance(severity, dict):
        bad(("severity",), "must map rule ids to info, warning or error")
    else:
        for rule_id, value in severity.items():
            if value not in SEVERITIES:
                bad(("severity", rule_id), f"must be one of {', '.join(SEVERITIES)}")
            else:
                config.severity[rule_id] = (value, doc.line(("severity", rule_id)))
    for index, entry in enumerate(_list(data, "ignore", bad)):
        where = ("ignore", index)
        if not isinstance(entry, dict):
            bad(where, "must be a mapping with rule, container, reason and optionally until")
            continue
        for key in entry:
            if key not in IGNORE_KEYS:
                bad(where + (key,), f"unknown key (expected {', '.join(sorted(IGNORE_KEYS))})")
        if not isinstance(entry.get("rule"), str):
            bad(where, "'rule' is required: a rule id, '<pack>/*' or a cause")
        if not isinstance(entry.get("reason"), str) or not entry.get("reason", "").strip():
            bad(where, "'reason' is required: say why this finding is acceptable")
        until = entry.get("until")
        if until is not None and not isinstance(until, _dt.date):
            try:
                until = _dt.date.fromisoformat(str(until))
            except ValueError:
                bad(where + ("until",), f"{until!r} is not a date (YYYY-MM-DD)")
                until = None
        config.ignore.append(Ignore(
            rule=entry.get("rule") or "", container=str(entry.get("container") or "*"),
            reason=str(entry.get("reason") or ""), until=until, line=doc.line(where)))
    if problems:
        raise ConfigError(problems)
    return config


def _list(data: dict, key: str, bad) -> list:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        bad((key,), "must be a list")
        return []
    return value


def selector_matches(selector: str, rule: Rule) -> bool:
    """A rule id (`dockdoc/bind-loopback`), a pack glob (`acme/*`) or a cause (`bind-loopback`)."""
    return fnmatch.fnmatchcase(rule.qualified_id, selector) or selector == rule.cause


def apply_to_rules(config: Config, rules: list[Rule]) -> list[Rule]:
    """Drop disabled rules and apply severity overrides. Selectors that match nothing are errors."""
    problems = []
    for selector, line in config.disable:
        if not any(selector_matches(selector, r) for r in rules):
            problems.append(f"{config.path}:{line}: disable: {selector!r} matches no rule, pack or cause")
    for selector, (_, line) in config.severity.items():
        if not any(selector_matches(selector, r) for r in rules):
            problems.append(f"{config.path}:{line}: severity: {selector!r} matches no rule, pack or cause")
    for ignore in config.ignore:
        if ignore.rule and not any(selector_matches(ignore.rule, r) for r in rules):
            problems.append(f"{config.path}:{ignore.line}: ignore: {ignore.rule!r} matches no rule, pack or cause")
    if problems:
        raise ConfigError(problems)
    kept = []
    for rule in rules:
        if any(selector_matches(s, rule) for s, _ in config.disable):
            continue
        for selector, (severity, _) in config.severity.items():
            if selector_matches(selector, rule):
                rule = _with_severity(rule, severity)
        kept.append(rule)
    return kept


def _with_severity(rule: Rule, severity: str) -> Rule:
    import dataclasses

    return dataclasses.replace(rule, severity=severity)
