"""The any-match prefilters (one RE2 Set pass, or one search over the joined lines) must never
change an answer: compared here with the plain newest-first line scan, for every any-match
pattern of the built-in packs, on real server log lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doctor.engine import conditions
from doctor.engine.packs import Leaf, all_rules, load_all

CATALOG = Path(__file__).resolve().parent / "data" / "failure-catalog.md"  # a copy of shared/failure-catalog.md


def _patterns():
    seen, stack = [], [rule.when for rule in all_rules(load_all())]
    stack += [rule.unless for rule in all_rules(load_all()) if rule.unless is not None]
    while stack:
        node = stack.pop()
        if isinstance(node, Leaf):
            if node.op == "any-match" and node.value not in seen:
                seen.append(node.value)
        else:
            stack.extend(node.children)
    return seen


def _lines() -> list[str]:
    # The real lines servers print (quoted in backticks in the catalog), plus ordinary noise.
    text = CATALOG.read_text()
    quoted = [q for q in re.findall(r"`([^`]{8,300})`", text)]
    noise = ['172.17.0.1 - - [27/Nov/2026 08:22:30] "GET / HTTP/1.1" 200 -',
             "[2026-11-27 08:00:00 +0000] [1] [INFO] Booting worker with pid: 21", "", "x" * 500]
    return quoted + noise


def _plain(lines, pattern):
    for item in reversed(lines):
        result = conditions._regex(item, pattern.line)
        if result:
            return result
    return False


@pytest.mark.parametrize("broken", [False, True], ids=["set", "joined-search-fallback"])
def test_prefilters_never_change_an_answer(broken, monkeypatch):
    monkeypatch.setattr(conditions._TWINS, "broken", broken)
    patterns = _patterns()
    assert len(patterns) >= 5
    lines = _lines()
    windows = [lines[i:i + 7] for i in range(0, len(lines), 3)] + [[line] for line in lines] + [[]]
    checked = 0
    for pattern in patterns:
        for window in windows:
            conditions.forget_joined()
            assert conditions._any_match(window, pattern) == _plain(window, pattern), (pattern.line.pattern, window)
            checked += 1
    assert checked > 100


def test_a_set_answer_without_the_sentinel_is_not_trusted(monkeypatch):
    pattern = conditions.compile_line_pattern(r"WORKER TIMEOUT \(pid:(?P<pid>\d+)\)")
    lines = ["[CRITICAL] WORKER TIMEOUT (pid:15)"]

    class OutOfMemory:  # what RE2::Set::Match returns when its DFA gives up: nothing at all
        def Match(self, text):
            return []

    monkeypatch.setattr(conditions._TWINS, "compiled", OutOfMemory())
    monkeypatch.setattr(conditions._TWINS, "compiled_size", len(conditions._TWINS.index))
    conditions.forget_joined()
    assert conditions._any_match(lines, pattern) == {"text": lines[0], "pid": "15"}
