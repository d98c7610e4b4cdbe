"""Condition operators: one flat table, each entry a value check (at load) and a test (at scan).

A test returns False for "no match" and a truthy value for a match; a dict is a match whose
named regex groups rules can quote as `match.<name>`. A type mismatch is no match, never a crash.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import re2

MAX_PATTERN = 1000  # characters; a longer pattern is almost surely a mistake
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors reach the user through validation, not on stderr
_RE2_OPTIONS.max_mem = 8 << 20  # bounds the compiled program, so a pack cannot exhaust memory


class BadValue(Exception):
    """A condition's `value` does not fit its operator (raised at load, with a message)."""


def compile_regex(pattern: Any):
    """RE2 matches in time linear in the input: no pattern can hang a scan on a long log."""
    if not isinstance(pattern, str):
        raise BadValue("value must be a string (a regular expression)")
    if len(pattern) > MAX_PATTERN:
        raise BadValue(f"regular expression longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise BadValue(f"invalid regular expression {pattern!r}: {detail} "
                          "(RE2 syntax: no backreferences or lookaround)") from None


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _comparable(a, b) -> bool:
    if _number(a) and _number(b):
        return True
    return type(a) is type(b) and isinstance(a, (str,))


def _compare(fn: Callable[[Any, Any], bool]):
    def test(actual, expected):
        return _comparable(actual, expected) and fn(actual, expected)

    return test


def _same_kind(a, b) -> bool:
    """Numbers compare with numbers (ints with floats), everything else only with its own type."""
    return (_number(a) and _number(b)) or type(a) is type(b)


def _ne(actual, expected):
    # "not equal" across types would be true of nearly everything: a mismatch is no match.
    return actual is not None and _same_kind(actual, expected) and actual != expected


def _eq(actual, expected):
    if _number(actual) and _number(expected):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def _contains(actual, expected):
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_eq(item, expected) for item in actual)
    if isinstance(actual, dict):
        return isinstance(expected, str) and expected in actual
    return False


def _in(actual, expected):
    return not isinstance(actual, (list, dict)) and actual is not None and any(_eq(actual, e) for e in expected)


def _not_in(actual, expected):
    if isinstance(actual, (list, dict)) or actual is None:
        return False
    if not any(_same_kind(actual, e) for e in expected):
        return False  # "137" against [0, 137]: a type mismatch, not a pass
    return not _in(actual, expected)


def _all_in(actual, expected):
    # An empty list is *no match*: "every listener is on loopback" must not hold when there are none.
    return isinstance(actual, list) and bool(actual) and all(_in(a, expected) for a in actual)


def _any_in(actual, expected):
    return isinstance(actual, list) and any(_in(a, expected) for a in actual)


def _regex(actual, pattern):
    if not isinstance(actual, str):
        return False
    found = pattern.search(actual)
    if not found:
        return False
    return {"text": actual, **{k: v for k, v in found.groupdict().items() if v is not None}}


class _LinePattern:
    """A pattern for `any-match`, with a multi-line twin used as a prefilter: the lines are
    joined once and searched in one pass, instead of one search per line (200 log lines, dozens
    of rules). A line that matches is always found by the twin ((?m) makes ^ and $ match at line
    breaks), so the prefilter can only let through too much, never too little; the per-line scan
    then decides, newest line first."""

    def __init__(self, pattern: str):
        self.line = compile_regex(pattern)
        self.joined = self.index = None
        # \A and \z anchor at the start and end of the whole text, which joining would change.
        if not ("\\A" in pattern or "\\z" in pattern or "(?-" in pattern):
            twin = "(?m)" + pattern
            self.joined = re2.compile(twin, _RE2_OPTIONS)
            self.index = _TWINS.add(twin)


class _TwinSet:
    """Every twin in one RE2 Set: a single pass over a container's joined lines says which
    patterns can match at all, so most any-match conditions cost a set lookup.

    RE2::Set answers with an empty list when its DFA runs out of memory, which would look like
    "nothing matched". Pattern 0 is the empty pattern, which matches every text: when it is
    missing from an answer, the answer is not trusted and each twin is searched on its own."""

    def __init__(self):
        self.index = {"": 0}
        self.compiled = None
        self.compiled_size = 0
        self.broken = False

    def add(self, twin: str) -> int:
        return self.index.setdefault(twin, len(self.index))

    def hits(self, text: str) -> set | None:
        if self.broken:
            return None
        if self.compiled is None or self.compiled_size != len(self.index):
            options = re2.Options()
            options.log_errors = False
            options.max_mem = 64 << 20
            compiled = re2.Set.SearchSet(options)
            for twin in self.index:  # insertion order is index order
                compiled.Add(twin)
            try:
                compiled.Compile()
            except re2.error:
                self.broken = True
                return None
            self.compiled, self.compiled_size = compiled, len(self.index)
        found = self.compiled.Match(text)
        return set(found) if 0 in found else None


_TWINS = _TwinSet()


def compile_line_pattern(pattern):
    if not isinstance(pattern, str):
        compile_regex(pattern)  # raises the same "must be a string" error as `regex`
    return _LinePattern(pattern)


_JOINED: dict[int, list] = {}  # id(list) -> [the list, its lines joined, its twin-set hits]


def _joined(lines: list) -> list:
    cached = _JOINED.get(id(lines))
    if cached is not None and cached[0] is lines:
        return cached
    if len(_JOINED) > 4096:
        _JOINED.clear()
    text = "\n".join(line for line in lines if isinstance(line, str))
    entry = [lines, text, _TWINS.hits(text)]  # holding the list keeps its id from being reused
    _JOINED[id(lines)] = entry
    return entry


def forget_joined() -> None:
    """Drop the joined texts (the evaluator calls this after each snapshot: bounded memory)."""
    _JOINED.clear()


def _any_match(actual, pattern: _LinePattern):
    """True when any string in the list matches; the *last* match wins, as logs read newest last."""
    if not isinstance(actual, list):
        return False
    if pattern.joined is not None:
        _lines, text, hits = _joined(actual)
        if hits is not None:
            if pattern.index not in hits:
                return False
        elif not pattern.joined.search(text):
            return False
    for item in reversed(actual):
        result = _regex(item, pattern.line)
        if result:
            return result
    return False


def _empty(actual, _):
    return actual is None or (isinstance(actual, (str, list, dict)) and len(actual) == 0)


def _not_empty(actual, _):
    return isinstance(actual, (str, list, dict)) and len(actual) > 0


def _no_value(value):
    if value is not None:
        raise BadValue("this operator takes no value")
    return None


def _scalar(value):
    if isinstance(value, (list, dict)) or value is None:
        raise BadValue("value must be a string, number or boolean")
    return value


def _number_value(value):
    if not _number(value) and not isinstance(value, str):
        raise BadValue("value must be a number or a string")
    return value


def _list(value):
    if not isinstance(value, list) or any(isinstance(v, (list, dict)) for v in value):
        raise BadValue("value must be a list of strings, numbers or booleans")
    return value


def _any_value(value):
    if value is None:
        raise BadValue("value is required")
    return value


# name -> (check and prepare the rule's value at load, test at scan)
OPERATORS: dict[str, tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]] = {
    "eq": (_scalar, _eq),
    "ne": (_scalar, _ne),
    "gt": (_number_value, _compare(lambda a, e: a > e)),
    "ge": (_number_value, _compare(lambda a, e: a >= e)),
    "lt": (_number_value, _compare(lambda a, e: a < e)),
    "le": (_number_value, _compare(lambda a, e: a <= e)),
    "in": (_list, _in),
    "not-in": (_list, _not_in),
    "contains": (_any_value, _contains),
    "all-in": (_list, _all_in),
    "any-in": (_list, _any_in),
    "regex": (compile_regex, _regex),
    "any-match": (compile_line_pattern, _any_match),
    "present": (_no_value, lambda a, _: a is not None),
    "absent": (_no_value, lambda a, _: a is None),
    "empty": (_no_value, _empty),
    "not-empty": (_no_value, _not_empty),
}
