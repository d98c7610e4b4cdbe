"""Facts in, findings out: the one pipeline that `scan`, `explain` and `watch` share.

packs (built-in, installed, config, DOCKDOC_RULES, --rules) -> config (disable, severity) ->
evaluate -> suppress (config ignores, container labels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from doctor import config as config_file
from doctor import suppress
from doctor.engine import evaluate as engine
from doctor.engine import packs as pack_loader


@dataclass
class Diagnosis:
    findings: list = field(default_factory=list)
    suppressed: list = field(default_factory=list)
    notices: list = field(default_factory=list)
    unknown: list = field(default_factory=list)


@dataclass
class Setup:
    """The rules to apply and how to silence findings; load once, use for many snapshots."""

    rules: list
    config: config_file.Config
    label_ignores: bool = True


def load(rule_paths=(), config_path: str | None = None, label_ignores: bool = True) -> Setup:
    config = config_file.load(config_path)
    paths = list(config.packs) + [p for p in os.environ.get("DOCKDOC_RULES", "").split(os.pathsep) if p]
    paths += list(rule_paths or [])
    rules = pack_loader.all_rules(pack_loader.load_all(paths))
    return Setup(config_file.apply_to_rules(config, rules), config, label_ignores)


def diagnose(snapshot: dict, setup: Setup) -> Diagnosis:
    result = engine.evaluate(snapshot, setup.rules)
    kept, suppressed, notices = suppress.apply(result.findings, snapshot["containers"], setup.config.ignore,
                                               setup.label_ignores)
    return Diagnosis(kept, suppressed, notices, result.unknown)
