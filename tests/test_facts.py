"""Snapshots: written, read back, and refused with a precise message when they are wrong."""

from __future__ import annotations

import json
import signal

import pytest

from doctor import __version__, facts
from doctor.errors import DockdocError, SnapshotError
from tests.snapshots import mixed_snapshot, write_json


def test_round_trip(tmp_path):
    original = mixed_snapshot()
    path = tmp_path / "snap.json"
    facts.write_snapshot(original, str(path))
    back = facts.read_snapshot(str(path))
    assert back == original
    assert back["schema_version"] == facts.SCHEMA_VERSION
    assert back["kind"] == "dockdoc-snapshot"
    assert back["dockdoc_version"] == __version__
    # It is plain JSON, readable without dockdoc.
    assert json.loads(path.read_text())["containers"][1]["listeners"][0]["address"] == "127.0.0.1"


def test_write_to_stdout(capsys):
    snap = mixed_snapshot()
    facts.write_snapshot(snap, "-")
    assert json.loads(capsys.readouterr().out) == snap


def test_write_to_an_unwritable_place(tmp_path):
    with pytest.raises(SnapshotError, match="cannot write snapshot"):
        facts.write_snapshot(mixed_snapshot(), str(tmp_path / "no" / "such" / "dir" / "s.json"))


def test_missing_unknown_is_filled_in(tmp_path):
    snap = mixed_snapshot()
    del snap["containers"][0]["unknown"]
    back = facts.read_snapshot(str(write_json(tmp_path / "s.json", snap)))
    assert back["containers"][0]["unknown"] == {}


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "schema_version": 1,\n  "kind": "dockdoc-snapshot",\n  "host": {,\n}\n')
    with pytest.raises(SnapshotError) as caught:
        facts.read_snapshot(str(path))
    assert str(caught.value).startswith(f"{path}:4: not valid JSON")
    assert isinstance(caught.value, DockdocError) and caught.value.exit_code == 2


def test_truncated_snapshot(tmp_path):
    text = json.dumps(mixed_snapshot(), indent=2)
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(SnapshotError, match=rf"^{path}:\d+: not valid JSON"):
        facts.read_snapshot(str(path))


def test_not_utf8(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SnapshotError, match="not UTF-8"):
        facts.read_snapshot(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(SnapshotError, match="cannot read snapshot .*No such file"):
        facts.read_snapshot(str(tmp_path / "nope.json"))


def test_newer_schema_version(tmp_path):
    snap = mixed_snapshot()
    snap["schema_version"] = facts.SCHEMA_VERSION + 1
    path = write_json(tmp_path / "future.json", snap)
    with pytest.raises(SnapshotError) as caught:
        facts.read_snapshot(str(path))
    message = str(caught.value)
    assert f"schema version {facts.SCHEMA_VERSION + 1}" in message
    assert "newer than this dockdoc understands" in message
    assert "upgrade dockdoc" in message


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop("kind"), 'is not a dockdoc snapshot (no "kind": "dockdoc-snapshot")'),
    (lambda s: s.update(kind="something-else"), "is not a dockdoc snapshot"),
    (lambda s: s.pop("schema_version"), "schema_version is missing or not an integer"),
    (lambda s: s.update(schema_version="1"), "schema_version is missing or not an integer"),
    (lambda s: s.update(schema_version=0), "unknown schema version 0"),
    (lambda s: s.pop("host"), '"host" must be an object'),
    (lambda s: s.pop("containers"), '"containers" must be a list'),
    (lambda s: s.update(containers={"web": {}}), '"containers" must be a list'),
    (lambda s: s["containers"].append("web"), "containers[4] must be an object"),
    (lambda s: s["containers"][1].pop("id"), "containers[1].id is missing or not a string"),
    (lambda s: s["containers"][2].pop("name"), "containers[2].name is missing or not a string"),
    (lambda s: s["containers"][0].update(state=None), "containers[0].state is missing or not an object"),
    (lambda s: s["containers"][3].pop("ports"), "containers[3].ports is missing or not a list"),
])
def test_missing_keys_are_named(tmp_path, change, message):
    snap = mixed_snapshot()
    change(snap)
    path = write_json(tmp_path / "s.json", snap)
    with pytest.raises(SnapshotError) as caught:
        facts.read_snapshot(str(path))
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_a_json_list_is_not_a_snapshot(tmp_path):
    path = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(SnapshotError, match="is not a dockdoc snapshot"):
        facts.read_snapshot(str(path))


@pytest.mark.parametrize("code,words", [
    (0, "success"),
    (1, "application error"),
    (2, "misuse of a command"),
    (126, "cannot be executed"),
    (127, "command was not found"),
    (137, "SIGKILL"),
    (139, "SIGSEGV, a segmentation fault"),
    (143, "SIGTERM"),
    (134, "SIGABRT, an abort"),
    (3, "application-specific"),
])
def test_exit_meaning(code, words):
    assert words in facts.exit_meaning(code)


def test_exit_meaning_of_signals_and_nothing():
    assert facts.exit_meaning(None) is None
    assert facts.exit_meaning(128 + signal.SIGHUP) == "killed by SIGHUP"
    assert facts.exit_meaning(137) != facts.exit_meaning(143)
    assert facts.exit_meaning(128 + 100) == "killed by signal 100"
    assert "out of memory" in facts.exit_meaning(137)


@pytest.mark.parametrize("text,expected", [
    ("2026-11-27T08:00:00.123456789Z", "2026-11-27T08:00:00.123456+00:00"),
    ("2026-11-27T08:00:00Z", "2026-11-27T08:00:00+00:00"),
    ("2026-11-27T09:00:00.5+01:00", "2026-11-27T09:00:00.500000+01:00"),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
    (None, None),
    ("yesterday", None),
])
def test_parse_time(text, expected):
    parsed = facts.parse_time(text)
    assert (parsed.isoformat() if parsed else None) == expected


@pytest.mark.parametrize("change,expected", [
    ({"health": "bad"}, "containers[0].health is not an object"),
    ({"logs": {"lines": 5}}, "containers[0].logs.lines is not a list of strings"),
    ({"ports": [{"port": "weird"}]}, "containers[0].ports[0] is not a port entry"),
    ({"restart": []}, "containers[0].restart is not an object"),
])
def test_malformed_container_parts_are_named(tmp_path, change, expected):
    container = {"id": "a" * 64, "name": "x", "state": {"running": True}, "ports": [], **change}
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"schema_version": 1, "kind": "dockdoc-snapshot", "host": {},
                                "containers": [container]}))
    with pytest.raises(SnapshotError) as caught:
        facts.read_snapshot(str(path))
    assert expected in str(caught.value)
