"""Every condition operator, table-driven: (fact value, rule value, expected).

`expected` is True (match), False (no match) or a dict (a match whose named regex groups rules can
quote as `match.<name>`). A type mismatch is *no match*, never an exception.
"""

from __future__ import annotations

import pytest

from doctor.engine.conditions import OPERATORS, BadValue, compile_regex

NOTHING = object()  # operators that take no value

CASES = {
    "eq": [
        ("running", "running", True),
        ("exited", "running", False),
        (5000, 5000, True),
        (5000, 5000.0, True),  # numbers compare as numbers
        (5000, 8080, False),
        (True, True, True),
        (False, True, False),
        # type mismatches: no match
        ("5000", 5000, False),
        (5000, "5000", False),
        (1, True, False),  # a bool is not a number
        (True, 1, False),
        (None, "running", False),
        (["running"], "running", False),
        ({"status": "running"}, "running", False),
    ],
    "ne": [
        ("exited", "running", True),
        ("running", "running", False),
        (1, 0, True),
        (0, 0, False),
        (0, 0.0, False),
        (None, "host", False),  # an absent fact is not "different": no match
    ],
    "gt": [
        (10, 5, True),
        (5, 5, False),
        (2.5, 2, True),
        ("b", "a", True),
        ("10", 9, False),  # a string is not a number
        (10, "9", False),
        (None, 0, False),
        (True, 0, False),  # bools are not numbers
        ([10], 5, False),
    ],
    "ge": [
        (10, 10, True),
        (10.0, 10, True),
        (9, 10, False),
        ("10", 10, False),
        (None, 10, False),
        ({"n": 10}, 10, False),
    ],
    "lt": [
        (3, 120, True),
        (120, 120, False),
        (0.4, 10, True),
        ("3", 120, False),
        (None, 120, False),
        (False, 1, False),
    ],
    "le": [
        (120, 120, True),
        (121, 120, False),
        ("a", "a", True),
        (None, 0, False),
        ([1], 2, False),
    ],
    "in": [
        (137, [137, 143], True),
        (1, [137, 143], False),
        ("exited", ["exited", "dead"], True),
        ("running", ["exited", "dead"], False),
        ("137", [137, 143], False),  # type mismatch
        (True, [1], False),
        (None, [None, 1], False),  # absent is never "in"
        ([137], [137], False),  # a list is not a member
        ({"a": 1}, ["a"], False),
    ],
    "not-in": [
        (1, [0, 137, 143], True),
        (0, [0, 137, 143], False),
        ("running", ["exited"], True),
        (None, [0], False),  # absent: no match
        ([1], [0], False),
        ({"a": 1}, [0], False),
    ],
    "contains": [
        ("Address already in use", "already", True),
        ("Address already in use", "refused", False),
        (["a", "b"], "b", True),
        (["a", "b"], "c", False),
        ([80, 443], 443, True),
        ([80, 443], "443", False),  # elements compare with eq's types
        ({"com.docker.compose.project": "x"}, "com.docker.compose.project", True),
        ({"other": "x"}, "com.docker.compose.project", False),
        ({"1": "x"}, 1, False),
        ("abc", 1, False),
        (None, "x", False),
        (42, 4, False),
    ],
    "all-in": [
        (["127.0.0.1", "::1"], ["127.0.0.1", "::1"], True),
        (["127.0.0.1"], ["127.0.0.1", "::1"], True),
        (["127.0.0.1", "0.0.0.0"], ["127.0.0.1", "::1"], False),
        ([], ["127.0.0.1", "::1"], False),  # empty: no match ("every listener on loopback" needs one)
        (None, ["127.0.0.1"], False),
        ("127.0.0.1", ["127.0.0.1"], False),  # a string is not a list
        ([["127.0.0.1"]], ["127.0.0.1"], False),
    ],
    "any-in": [
        (["0.0.0.0", "127.0.0.1"], ["127.0.0.1"], True),
        (["0.0.0.0"], ["127.0.0.1"], False),
        ([], ["127.0.0.1"], False),
        (None, ["127.0.0.1"], False),
        ("127.0.0.1", ["127.0.0.1"], False),
        ([5000], ["5000"], False),
    ],
    "regex": [
        ("exec format error", "format error", True),
        ("permission denied", "format error", False),
        ('exec: "gunicorn": executable file not found in $PATH',
         'exec: "(?P<command>[^"]+)": executable file not found',
         {"text": 'exec: "gunicorn": executable file not found in $PATH', "command": "gunicorn"}),
        # a group that did not take part in the match is left out, not None
        ("curl: not found", r"(?:exec: \"(?P<tool>[^\"]+)\"|(?P<tool2>[\w.-]+): not found)",
         {"text": "curl: not found", "tool2": "curl"}),
        ("Connection REFUSED", "(?i)refused", True),
        (None, "x", False),
        (["match me"], "match", False),  # a list is not a string: use any-match
        (5000, "5000", False),
        ({"a": "b"}, "a", False),
    ],
    "any-match": [
        (["booting", "Address already in use", "exiting"], "already in use",
         {"text": "Address already in use"}),
        (["booting", "listening"], "already in use", False),
        ([], "x", False),
        (None, "x", False),
        ("Address already in use", "already", False),  # a string is not a list of lines
        ([None, 5, "ok line"], "ok", {"text": "ok line"}),  # non-strings in the list are skipped
        ([None, 5, {"x": 1}], "x", False),
        # the newest (last) matching line wins, as logs read newest last
        (["worker 1 failed: code=3", "retrying", "worker 2 failed: code=7", "done"],
         r"worker (?P<worker>\d+) failed: code=(?P<code>\d+)",
         {"text": "worker 2 failed: code=7", "worker": "2", "code": "7"}),
    ],
    "present": [
        ("x", NOTHING, True),
        (0, NOTHING, True),
        (False, NOTHING, True),
        ([], NOTHING, True),
        (None, NOTHING, False),
    ],
    "absent": [
        (None, NOTHING, True),
        ("", NOTHING, False),
        (0, NOTHING, False),
        ({}, NOTHING, False),
    ],
    "empty": [
        (None, NOTHING, True),
        ("", NOTHING, True),
        ([], NOTHING, True),
        ({}, NOTHING, True),
        ("x", NOTHING, False),
        ([0], NOTHING, False),
        ({"a": None}, NOTHING, False),
        (0, NOTHING, False),  # a number is neither empty nor not-empty
        (False, NOTHING, False),
    ],
    "not-empty": [
        ("x", NOTHING, True),
        ([None], NOTHING, True),
        ({"a": 1}, NOTHING, True),
        ("", NOTHING, False),
        ([], NOTHING, False),
        ({}, NOTHING, False),
        (None, NOTHING, False),
        (7, NOTHING, False),
        (True, NOTHING, False),
    ],
}

# Negative operators across types: a mismatch is no match, not a "not equal".
MISMATCH_CASES = [
    ("ne", "0", 0),
    ("ne", ["host"], "host"),
    ("not-in", "137", [0, 137]),
]


def _apply(op, actual, value):
    check, test = OPERATORS[op]
    prepared = check(None if value is NOTHING else value)
    return test(actual, prepared)


def _params():
    for op, rows in CASES.items():
        for actual, value, expected in rows:
            yield pytest.param(op, actual, value, expected, id=f"{op}-{actual!r}-{value if value is not NOTHING else ''!r}")


def test_every_operator_has_a_table():
    assert set(CASES) == set(OPERATORS), "each operator needs rows in CASES (and nothing else may be there)"
    for op, rows in CASES.items():
        outcomes = {bool(expected) for _, _, expected in rows}
        assert outcomes == {True, False}, f"{op}: the table must hold both a match and a no-match"


@pytest.mark.parametrize("op,actual,value,expected", list(_params()))
def test_operator(op, actual, value, expected):
    result = _apply(op, actual, value)
    if isinstance(expected, dict):
        assert result == expected
    else:
        assert isinstance(result, (bool, dict)), f"{op} returned {result!r}"
        assert bool(result) is expected


@pytest.mark.parametrize("op,actual,value", [
    pytest.param(op, actual, value, id=f"{op}-{actual!r}-{value!r}") for op, actual, value in MISMATCH_CASES
])
def test_type_mismatch_is_no_match_for_negative_operators(op, actual, value):
    """The design: "a type mismatch meaning *no match*". `exit_code ne "0"` (a quoted number in
    YAML) must not hold for every container, including the one whose exit code is 0."""
    assert not _apply(op, actual, value)


# A rule value of the right shape for each operator, to run every operator over every fact type.
VALID_VALUES = {
    "eq": "x", "ne": "x", "gt": 1, "ge": 1, "lt": 1, "le": 1, "in": ["x", 1], "not-in": ["x", 1],
    "contains": "x", "all-in": ["x"], "any-in": ["x"], "regex": "x", "any-match": "x",
    "present": NOTHING, "absent": NOTHING, "empty": NOTHING, "not-empty": NOTHING,
}
ODD_FACTS = [None, True, False, 0, -1, 1.5, float("nan"), "", "x", [], ["x"], [None], [["x"]], [{"x": 1}],
             {}, {"x": 1}, object()]


@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_no_fact_type_raises(op):
    assert set(VALID_VALUES) == set(OPERATORS)
    for actual in ODD_FACTS:
        result = _apply(op, actual, VALID_VALUES[op])
        assert isinstance(result, (bool, dict)), f"{op}({actual!r}) returned {result!r}"


@pytest.mark.parametrize("op,value,message", [
    ("eq", ["a"], "string, number or boolean"),
    ("eq", None, "string, number or boolean"),
    ("gt", [1], "number or a string"),
    ("gt", True, "number or a string"),
    ("in", "exited", "list"),
    ("in", [["nested"]], "list"),
    ("all-in", {"a": 1}, "list"),
    ("contains", None, "required"),
    ("regex", 5, "regular expression"),
    ("any-match", "(a", "invalid regular expression"),
    ("present", "x", "no value"),
    ("empty", [], "no value"),
])
def test_bad_values_are_rejected_at_load(op, value, message):
    check, _ = OPERATORS[op]
    with pytest.raises(BadValue, match=message):
        check(value)


@pytest.mark.parametrize("pattern", [r"(\w+) \1", r"foo(?=bar)", r"(?<!x)y", r"(?!a)b"])
def test_backreferences_and_lookaround_are_not_re2(pattern):
    with pytest.raises(BadValue, match="invalid regular expression"):
        compile_regex(pattern)


def test_overlong_pattern_is_rejected():
    with pytest.raises(BadValue, match="longer than"):
        compile_regex("a" * 1001)
    assert compile_regex("a" * 1000).search("a" * 1000)
