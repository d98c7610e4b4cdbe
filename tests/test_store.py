"""The finding store: lifecycle, fingerprints, scopes, the outbox and its leases. A real SQLite
file in a temporary directory; no daemon needed."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from doctor.store import Observed, StateError, Store, fingerprint, idempotency_key, subject_of


class RecordingSink:
    """A sink as the store sees it: a key, a label and a renderer."""

    def __init__(self, key="sink-a"):
        self.key = key
        self.label = f"test={key}"

    def render(self, event: dict, key: str) -> bytes:
        return json.dumps({"key": key, "event": event["event"], "fingerprint": event["fingerprint"]}).encode()


def finding(rule="dockdoc/exit-error", cause="exit-error", severity="error", name="web", cid="c1", port=None):
    data = {"rule": rule, "cause": cause, "severity": severity, "title": "t", "message": f"{name} broke",
            "evidence": [], "fix": None, "docs": None, "container": {"id": cid, "name": name}}
    if port:
        data["port"] = port
    return data


def seen(name="web", compose=None, **kw):
    return Observed(finding(name=name, **kw), subject_of(name, compose), compose)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state" / "dockdoc.db")
    yield s
    s.close()


def test_lifecycle_new_ongoing_resolved_and_new_again(store):
    first = store.record([seen()], now=100)
    assert [e.event for e in first] == ["new"]
    assert store.record([seen()], now=200) == []  # ongoing: nothing to announce
    [row] = store.open_findings()
    assert row["state"] == "ongoing" and row["first_seen"] == 100 and row["last_seen"] == 200
    gone = store.record([], now=300)
    assert [e.event for e in gone] == ["resolved"] and gone[0].resolved_at == 300
    assert store.open_findings() == []
    again = store.record([seen()], now=400)
    assert [e.event for e in again] == ["new"] and again[0].fingerprint == first[0].fingerprint
    assert [h["event"] for h in store.history()] == ["new", "resolved", "new"]


def test_fingerprint_survives_recreation_and_tells_items_apart(store):
    old = seen(cid="aaa")
    new = seen(cid="bbb")  # docker rm + docker run with the same name
    assert old.fingerprint == new.fingerprint
    assert seen(port="5000/tcp").fingerprint != seen(port="8080/tcp").fingerprint
    assert seen(name="other").fingerprint != old.fingerprint
    # Compose: the service is the subject, whatever the container's name or number.
    compose = {"project": "shop", "service": "web", "number": "1"}
    assert seen(name="shop-web-1", compose=compose).fingerprint == \
        seen(name="shop_web_2", compose=compose).fingerprint
    assert fingerprint("r", "compose:shop/web", "") == seen(name="x", compose=compose, rule="r").fingerprint
    store.record([old], now=1)
    assert store.record([new], now=2) == []


def test_compose_replicas_make_one_finding(store):
    compose = {"project": "shop", "service": "worker"}
    events = store.record([seen(name="shop-worker-1", compose=compose, cid="1"),
                           seen(name="shop-worker-2", compose=compose, cid="2")], now=1)
    assert len(events) == 1 and events[0].subject == "compose:shop/worker"


def test_scope_limits_what_a_targeted_scan_can_resolve(store):
    store.record([seen(name="a"), seen(name="b")], now=1)
    events = store.record([], scope=lambda view: view["subject"] == "container:a", now=2)
    assert [(e.event, e.subject) for e in events] == [("resolved", "container:a")]
    assert [r["subject"] for r in store.open_findings()] == ["container:b"]


def test_unknown_is_not_fixed(store):
    store.record([seen(rule="dockdoc/bind-loopback", cause="bind-loopback")], now=1)
    # The container stopped: its sockets cannot be read, the rule answers unknown.
    events = store.record([], unknown={("container:web", "dockdoc/bind-loopback")}, now=2)
    assert events == []
    assert len(store.open_findings()) == 1


def test_min_severity_neither_opens_nor_resolves_below_it(store):
    store.record([seen(severity="info", rule="dockdoc/not-published", cause="not-published")],
                 min_severity="info", now=1)
    assert store.record([], min_severity="warning", now=2) == []  # not this scan's business
    assert store.record([seen(severity="info", name="x")], min_severity="warning", now=3) == []
    assert [e.event for e in store.record([], min_severity="info", now=4)] == ["resolved"]


def test_resolve_after_waits_out_flapping(store):
    store.record([seen()], now=0)
    assert store.record([], resolve_after=60, now=10) == []
    [(due, view)] = store.pending_resolutions(60)
    assert due == 70 and view["subject"] == "container:web"
    assert store.record([seen()], resolve_after=60, now=20) == []  # back: nothing said, clock reset
    assert store.pending_resolutions(60) == []
    assert store.record([], resolve_after=60, now=30) == []
    assert [e.event for e in store.record([], resolve_after=60, now=95)] == ["resolved"]


def test_remind_repeats_ongoing_findings(store):
    store.record([seen()], now=0, remind=100)
    assert store.record([seen()], now=50, remind=100) == []
    assert [e.event for e in store.record([seen()], now=120, remind=100)] == ["reminder"]
    assert store.record([seen()], now=150, remind=100) == []


def test_events_are_queued_once_per_sink_in_the_same_transaction(store):
    sinks = [RecordingSink("a"), RecordingSink("b")]
    [event] = store.record([seen()], sinks=sinks, now=1)
    assert store.outbox_depth(["a", "b"]) == 2
    rows = store.due(["a"], now=1)
    assert len(rows) == 1
    body = json.loads(rows[0].body)
    assert body["key"] == rows[0].idempotency_key == idempotency_key(event.event_id, "a")
    assert idempotency_key(event.event_id, "a") != idempotency_key(event.event_id, "b")


def test_claim_is_exclusive_across_processes_and_expires(tmp_path):
    path = tmp_path / "s.db"
    one, two = Store(path), Store(path)  # two processes sharing the file
    try:
        one.record([seen()], sinks=[RecordingSink("a")], now=1)
        [row] = two.due(["a"])
        assert one.claim(row.id, lease_seconds=30, now=10)
        assert not two.claim(row.id, lease_seconds=30, now=11)
        assert two.due(["a"], now=11) == []  # held
        assert two.claim(row.id, lease_seconds=30, now=41)  # the holder died: the lease ran out
        two.delivered(row.id)
        assert not one.claim(row.id, lease_seconds=30, now=100)  # done is done
        assert one.outbox_depth(["a"]) == 0
    finally:
        one.close()
        two.close()


def test_retry_later_and_rejected(store):
    store.record([seen(), seen(name="b")], sinks=[RecordingSink("a")], now=1)
    first, second = store.due(["a"], now=1)
    store.retry_later(first.id, "HTTP 503", next_attempt_at=50)
    store.rejected(second.id, "HTTP 400: bad")
    assert store.due(["a"], now=10) == []
    assert store.next_due(["a"]) == 50
    [again] = store.due(["a"], now=50)
    assert again.attempts == 1 and again.idempotency_key == first.idempotency_key
    statuses = {r["status"] for r in store.outbox(None)}
    assert statuses == {"pending", "rejected"}


def test_outbox_survives_a_restart(tmp_path):
    path = tmp_path / "s.db"
    store = Store(path)
    store.record([seen()], sinks=[RecordingSink("a")], now=1)
    store.close()
    again = Store(path)
    try:
        [row] = again.due(["a"])
        assert json.loads(row.body)["event"] == "new"
        assert again.orphaned(["other"]) == [("test=a", 1)]
    finally:
        again.close()


def test_file_is_private_and_consistent(tmp_path):
    path = tmp_path / "deep" / "s.db"
    store = Store(path)
    store.record([seen()], sinks=[RecordingSink("a")], now=1)
    store.close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("make", ["under-a-file", "a-directory"])
def test_unusable_path_is_one_clear_error(tmp_path, make):
    blocker = tmp_path / "blocker"
    if make == "under-a-file":
        blocker.write_text("x")
        path = blocker / "state.db"
    else:
        blocker.mkdir()
        path = blocker
    with pytest.raises(StateError) as info:
        Store(path)
    message = str(info.value)
    assert str(path) in message and "--state" in message and "\n" not in message


def test_a_findings_events_reach_a_sink_in_order(store):
    # The receiver was down: the `new` backs off. The finding resolves meanwhile: its `resolved`
    # must not overtake the `new` (a chat would show RESOLVED, then NEW minutes later).
    store.record([seen()], sinks=[RecordingSink("a")], now=1)
    [new] = store.due(["a"], now=1)
    assert store.claim(new.id, lease_seconds=30, now=1)
    store.retry_later(new.id, "connection refused", next_attempt_at=100)
    store.record([seen(name="other")], sinks=[RecordingSink("a")], now=2)  # another finding: not held up
    store.record([seen(name="other")], sinks=[RecordingSink("a")], now=3)  # web resolved
    assert [(r.event, json.loads(r.body)["fingerprint"]) for r in store.due(["a"], now=50)] == \
        [("new", seen(name="other").fingerprint)]
    assert store.next_due(["a"]) == 2  # the waiting `resolved` does not make the loop spin
    store.delivered(store.due(["a"], now=50)[0].id)
    assert store.next_due(["a"]) == 100
    assert [r.event for r in store.due(["a"], now=100)] == ["new"]
    store.delivered(new.id)
    assert [r.event for r in store.due(["a"], now=101)] == ["resolved"]


def test_a_long_running_store_prunes_old_rows_while_it_runs(tmp_path):
    store = Store(tmp_path / "s.db")  # opened once, as a watch does, and kept open for months
    try:
        day = 86400
        start = time.time()
        store.record([seen(name="gone")], sinks=[RecordingSink("a")], now=start)
        [row] = store.due(["a"], now=start)
        store.delivered(row.id, now=start)
        store.record([], sinks=[RecordingSink("a")], now=start + 1)  # resolved
        [row] = store.due(["a"], now=start + 1)
        store.delivered(row.id, now=start + 1)
        store.record([seen(name="live")], now=start + 200 * day)
        assert [h["subject"] for h in store.history()] == ["container:live"]
        assert store.outbox(None) == []
        db = sqlite3.connect(tmp_path / "s.db")
        try:
            assert [r[0] for r in db.execute("SELECT subject FROM findings")] == ["container:live"]
        finally:
            db.close()
    finally:
        store.close()


def test_history_outbox_shows_what_waits_behind_many_delivered_rows(tmp_path):
    from typer.testing import CliRunner

    from doctor.cli import app

    path = tmp_path / "s.db"
    store = Store(path)
    try:
        store.record([seen(name=f"ok{i}") for i in range(60)], sinks=[RecordingSink("a")], now=1)
        for row in store.due(["a"], limit=100):
            store.delivered(row.id)
        store.record([seen(name=f"ok{i}") for i in range(60)] + [seen(name="late")], sinks=[RecordingSink("a")],
                     now=2)
    finally:
        store.close()
    result = CliRunner().invoke(app, ["history", "--outbox", "--format", "json", "--state", str(path)])
    assert result.exit_code == 0, result.output
    assert [(r["status"], r["event"]) for r in json.loads(result.output)] == [("pending", "new")]
