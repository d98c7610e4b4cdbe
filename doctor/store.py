"""The finding store: one SQLite file with the findings' lifecycle, their history, and the outbox
of deliveries to sinks.

A finding is known by a *fingerprint* that survives re-creating the container: the rule, the
subject (`compose:<project>/<service>` for a compose service, `container:<name>` otherwise) and the
item the rule looked at (a port such as `5000/tcp`, or nothing). Its states:

    new ──(seen again)──> ongoing ──(absent from a scan that covers it)──> resolved ──(seen)──> new

`record()` applies one scan's findings in a single transaction that also writes the history and one
outbox row per sink for every `new`, `resolved` (and, with `remind`, `reminder`) event: an event is
never announced without being queued, nor queued twice. Delivery leases a row, posts it and marks it
delivered; a crash between the two leaves the row pending, and the receiver deduplicates the retry
by its idempotency key. Several processes may share the file (a watch and a cron `scan --post`):
SQLite's WAL mode and a lease per row keep them from posting the same row together.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable

from doctor.errors import DockdocError

SCHEMA_VERSION = 1
OPEN_STATES = ("new", "ongoing")
EVENTS = ("new", "resolved", "reminder")
HISTORY_KEEP_SECONDS = 180 * 86400
DELIVERED_KEEP_SECONDS = 14 * 86400
PRUNE_EVERY_SECONDS = 3600  # a watch runs for months: prune while it runs, not only at open
_KEY_NAMESPACE = uuid.UUID("5d0c2a4e-7d7f-4d55-9a53-1f3f4a7b8c11")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS findings (
    fingerprint    TEXT PRIMARY KEY,
    rule           TEXT NOT NULL,
    cause          TEXT NOT NULL,
    severity       TEXT NOT NULL,
    subject        TEXT NOT NULL,
    item           TEXT NOT NULL DEFAULT '',
    state          TEXT NOT NULL CHECK (state IN ('new', 'ongoing', 'resolved')),
    first_seen     REAL NOT NULL,
    last_seen      REAL NOT NULL,
    missing_since  REAL,
    resolved_at    REAL,
    notified_at    REAL,
    container_id   TEXT,
    container_name TEXT,
    compose        TEXT,
    finding        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_by_state ON findings (state, subject);
CREATE TABLE IF NOT EXISTS history (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    at             REAL NOT NULL,
    event          TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    rule           TEXT NOT NULL,
    cause          TEXT NOT NULL,
    severity       TEXT NOT NULL,
    subject        TEXT NOT NULL,
    item           TEXT NOT NULL,
    container_name TEXT,
    message        TEXT
);
CREATE INDEX IF NOT EXISTS history_by_time ON history (at);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sink            TEXT NOT NULL,
    sink_label      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL,
    event           TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    body            BLOB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'rejected')),
    created_at      REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    lease_owner     TEXT,
    last_error      TEXT,
    done_at         REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, sink, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_by_finding ON outbox (fingerprint, sink, status, id);
"""


class StateError(DockdocError):
    """The state store cannot be opened, created or written."""


def default_path() -> str:
    """$DOCKDOC_STATE, else $XDG_STATE_HOME/dockdoc/state.db (~/.local/state/dockdoc/state.db)."""
    if os.environ.get("DOCKDOC_STATE"):
        return os.environ["DOCKDOC_STATE"]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "dockdoc", "state.db")


# ---- identity ----------------------------------------------------------------------------------

def subject_of(name: str, compose: dict | None) -> str:
    """What a finding is about, independent of the container's id: re-creating the container (or
    scaling a compose service) keeps the subject."""
    if compose and compose.get("project") and compose.get("service"):
        return f"compose:{compose['project']}/{compose['service']}"
    return f"container:{name}"


def fingerprint(rule: str, subject: str, item: str = "") -> str:
    return hashlib.sha256(f"{rule}\0{subject}\0{item}".encode()).hexdigest()[:24]


def idempotency_key(event_id: str, sink: str) -> str:
    """One key per (event, sink), the same on every retry."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{event_id}/{sink}"))


@dataclass
class Observed:
    """A finding as one scan saw it, with what the store needs to know it again."""

    finding: dict
    subject: str
    compose: dict | None

    @property
    def item(self) -> str:
        return self.finding.get("item") or self.finding.get("port") or ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.finding["rule"], self.subject, self.item)


@dataclass
class Event:
    """A lifecycle event to announce: `new`, `resolved` or `reminder`."""

    event_id: str
    event: str
    at: float
    fingerprint: str
    subject: str
    item: str
    finding: dict
    first_seen: float
    last_seen: float
    resolved_at: float | None

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Outgoing:
    """One outbox row being delivered."""

    id: int
    sink: str
    sink_label: str
    idempotency_key: str
    event: str
    fingerprint: str
    body: bytes
    attempts: int


# An outbox row `o` that no older pending row of the same finding and sink must precede.
_FIRST_OF_FINDING = ("NOT EXISTS (SELECT 1 FROM outbox AS older WHERE older.fingerprint = o.fingerprint"
                     " AND older.sink = o.sink AND older.status = 'pending' AND older.id < o.id)")

# A scope says which stored findings a scan could have seen (and so may resolve).
Scope = Callable[[dict], bool]


class Store:
    """The SQLite file. One connection per thread; writes are short IMMEDIATE transactions."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = str(path or default_path())
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._pruned_at = 0.0
        self._open()

    # -- connections ------------------------------------------------------------------------------

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self._error(f"cannot create the directory {directory}: {exc.strerror or exc}") from exc
        if os.path.isdir(self.path):
            raise self._error(f"{self.path} is a directory")
        old_umask = os.umask(0o077)  # the file holds finding details and pending payloads
        try:
            db = self._db()
            with self._write(db):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise self._error(f"{self.path} was written by a newer dockdoc (store schema {row[0]})")
                self._prune(db, time.time())
        except sqlite3.Error as exc:
            raise self._error(str(exc)) from exc
        finally:
            os.umask(old_umask)

    def _prune(self, db, now: float) -> None:
        """Forget what is old: history and long-resolved findings after HISTORY_KEEP_SECONDS,
        delivered and rejected outbox rows after DELIVERED_KEEP_SECONDS. Pending rows are kept."""
        db.execute("DELETE FROM history WHERE at < ?", (now - HISTORY_KEEP_SECONDS,))
        db.execute("DELETE FROM findings WHERE state = 'resolved' AND resolved_at < ?", (now - HISTORY_KEEP_SECONDS,))
        db.execute("DELETE FROM outbox WHERE status != 'pending' AND done_at < ?", (now - DELIVERED_KEEP_SECONDS,))
        self._pruned_at = now

    def _error(self, reason: str) -> StateError:
        return StateError(f"cannot use the state store {self.path}: {reason}",
                          "choose a writable file with --state PATH (or DOCKDOC_STATE)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a queued delivery must survive a power cut
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    class _write:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, tb):
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
            return False

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection."""
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            try:
                db.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    # -- the lifecycle ----------------------------------------------------------------------------

    def record(self, observed: Iterable[Observed], *, scope: Scope | None = None,
               unknown: set | frozenset = frozenset(), min_severity: str = "info",
               sinks: list | tuple = (), now: float | None = None, remind: float | None = None,
               resolve_after: float = 0.0) -> list[Event]:
        """Apply one scan. `observed`: the findings it made. `scope`: which stored findings it could
        have seen (None = all). `unknown`: (subject, rule) pairs it could not decide: their open
        findings stay open. Findings below `min_severity` are neither opened nor resolved.
        `sinks`: objects with `.key`, `.label` and `.render(event_dict, idempotency_key) -> bytes`;
        each event gets one outbox row per sink. Returns the events, in order."""
        from doctor.engine.packs import SEVERITY_RANK

        now = time.time() if now is None else now
        floor = SEVERITY_RANK[min_severity]
        seen: dict[str, Observed] = {}
        for item in observed:
            if SEVERITY_RANK[item.finding["severity"]] >= floor:
                seen.setdefault(item.fingerprint, item)  # compose replicas: one finding per service
        events: list[Event] = []
        db = self._db()
        with self._write(db):
            for fp, item in seen.items():
                row = db.execute("SELECT * FROM findings WHERE fingerprint = ?", (fp,)).fetchone()
                finding_json = json.dumps(item.finding, sort_keys=True, default=str)
                compose_json = json.dumps(item.compose) if item.compose else None
                container = item.finding.get("container") or {}
                if row is None or row["state"] == "resolved":
                    db.execute(
                        "INSERT OR REPLACE INTO findings (fingerprint, rule, cause, severity, subject, item, state,"
                        " first_seen, last_seen, missing_since, resolved_at, notified_at, container_id,"
                        " container_name, compose, finding) VALUES (?,?,?,?,?,?,'new',?,?,NULL,NULL,?,?,?,?,?)",
                        (fp, item.finding["rule"], item.finding["cause"], item.finding["severity"], item.subject,
                         item.item, now, now, now, container.get("id"), container.get("name"), compose_json,
                         finding_json))
                    events.append(self._event(db, "new", fp, item.subject, item.item, item.finding, now, now, now))
                    continue
                reminder = (remind is not None and remind > 0 and row["notified_at"] is not None
                            and now - row["notified_at"] >= remind)
                db.execute(
                    "UPDATE findings SET state = 'ongoing', severity = ?, cause = ?, last_seen = ?,"
                    " missing_since = NULL, container_id = ?, container_name = ?, compose = ?, finding = ?,"
                    " notified_at = ? WHERE fingerprint = ?",
                    (item.finding["severity"], item.finding["cause"], now, container.get("id"),
                     container.get("name"), compose_json, finding_json,
                     now if reminder else row["notified_at"], fp))
                if reminder:
                    events.append(self._event(db, "reminder", fp, item.subject, item.item, item.finding,
                                              now, row["first_seen"], now))
            for row in db.execute("SELECT * FROM findings WHERE state IN ('new', 'ongoing')").fetchall():
                fp = row["fingerprint"]
                if fp in seen or SEVERITY_RANK.get(row["severity"], 0) < floor:
                    continue
                if (row["subject"], row["rule"]) in unknown:
                    if row["missing_since"] is not None:  # could not tell: unknown is not "fixed"
                        db.execute("UPDATE findings SET missing_since = NULL WHERE fingerprint = ?", (fp,))
                    continue
                if scope is not None and not scope(_scope_view(row)):
                    continue
                missing_since = row["missing_since"] if row["missing_since"] is not None else now
                if now - missing_since < resolve_after:
                    if row["missing_since"] is None:
                        db.execute("UPDATE findings SET missing_since = ? WHERE fingerprint = ?", (now, fp))
                    continue
                db.execute("UPDATE findings SET state = 'resolved', resolved_at = ?, missing_since = NULL"
                           " WHERE fingerprint = ?", (now, fp))
                finding = json.loads(row["finding"])
                events.append(self._event(db, "resolved", fp, row["subject"], row["item"], finding, now,
                                          row["first_seen"], row["last_seen"], resolved_at=now))
            for event in events:
                self._enqueue(db, event, sinks, now)
            if now - self._pruned_at >= PRUNE_EVERY_SECONDS:
                self._prune(db, now)
        return events

    def _event(self, db, kind, fp, subject, item, finding, now, first_seen, last_seen, resolved_at=None) -> Event:
        event = Event(event_id=uuid.uuid4().hex, event=kind, at=now, fingerprint=fp, subject=subject, item=item,
                      finding=finding, first_seen=first_seen, last_seen=last_seen, resolved_at=resolved_at)
        db.execute(
            "INSERT INTO history (event_id, at, event, fingerprint, rule, cause, severity, subject, item,"
            " container_name, message) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (event.event_id, now, kind, fp, finding["rule"], finding["cause"], finding["severity"], subject, item,
             (finding.get("container") or {}).get("name"), finding.get("message")))
        return event

    def _enqueue(self, db, event: Event, sinks, now: float) -> None:
        for sink in sinks:
            key = idempotency_key(event.event_id, sink.key)
            body = sink.render(event.as_dict(), key)
            db.execute(
                "INSERT OR IGNORE INTO outbox (sink, sink_label, idempotency_key, event_id, event, fingerprint,"
                " body, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (sink.key, sink.label, key, event.event_id, event.event, event.fingerprint, body, now, now))

    def pending_resolutions(self, resolve_after: float) -> list[tuple[float, dict]]:
        """Open findings absent from their last scan, waiting out `resolve_after`: (due, scope view)."""
        rows = self._db().execute(
            "SELECT * FROM findings WHERE state IN ('new', 'ongoing') AND missing_since IS NOT NULL").fetchall()
        return [(row["missing_since"] + resolve_after, _scope_view(row)) for row in rows]

    # -- the outbox -------------------------------------------------------------------------------

    def due(self, sinks: Iterable[str], now: float | None = None, limit: int = 20) -> list[Outgoing]:
        """Pending rows of these sinks whose next attempt is due and that nobody holds, oldest first.
        A finding's events reach a sink in order: a row waits while an older pending row of the same
        finding and sink does (a `resolved` never overtakes its `new` that is backing off)."""
        sinks = list(sinks)
        if not sinks:
            return []
        now = time.time() if now is None else now
        marks = ",".join("?" * len(sinks))
        rows = self._db().execute(
            f"SELECT * FROM outbox AS o WHERE status = 'pending' AND sink IN ({marks}) AND next_attempt_at <= ?"
            f" AND (lease_until IS NULL OR lease_until < ?) AND {_FIRST_OF_FINDING} ORDER BY id LIMIT ?",
            (*sinks, now, now, limit)).fetchall()
        return [Outgoing(id=r["id"], sink=r["sink"], sink_label=r["sink_label"],
                         idempotency_key=r["idempotency_key"], event=r["event"], fingerprint=r["fingerprint"],
                         body=bytes(r["body"]), attempts=r["attempts"]) for r in rows]

    def claim(self, row_id: int, lease_seconds: float, now: float | None = None) -> bool:
        """Take a row for one attempt; False when another process holds it or it is done."""
        now = time.time() if now is None else now
        db = self._db()
        with self._write(db):
            cursor = db.execute(
                "UPDATE outbox SET lease_until = ?, lease_owner = ? WHERE id = ? AND status = 'pending'"
                " AND (lease_until IS NULL OR lease_until < ?)", (now + lease_seconds, self.owner, row_id, now))
            return cursor.rowcount == 1

    def delivered(self, row_id: int, now: float | None = None) -> None:
        self._finish(row_id, "delivered", None, now)

    def rejected(self, row_id: int, error: str, now: float | None = None) -> None:
        self._finish(row_id, "rejected", error, now)

    def _finish(self, row_id: int, status: str, error: str | None, now: float | None) -> None:
        now = time.time() if now is None else now
        db = self._db()
        with self._write(db):
            db.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, done_at = ?, last_error = ?,"
                       " lease_until = NULL, lease_owner = NULL WHERE id = ?", (status, now, error, row_id))

    def retry_later(self, row_id: int, error: str, next_attempt_at: float) -> None:
        db = self._db()
        with self._write(db):
            db.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
                       " lease_until = NULL, lease_owner = NULL WHERE id = ?", (next_attempt_at, error, row_id))

    def release(self, row_id: int) -> None:
        """Give a claimed row back untried (shutting down before the attempt started)."""
        db = self._db()
        with self._write(db):
            db.execute("UPDATE outbox SET lease_until = NULL, lease_owner = NULL WHERE id = ? AND lease_owner = ?",
                       (row_id, self.owner))

    def next_due(self, sinks: Iterable[str]) -> float | None:
        sinks = list(sinks)
        if not sinks:
            return None
        marks = ",".join("?" * len(sinks))
        row = self._db().execute(
            f"SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM outbox AS o"
            f" WHERE status = 'pending' AND sink IN ({marks}) AND {_FIRST_OF_FINDING}", sinks).fetchone()
        return row[0]

    def outbox_depth(self, sinks: Iterable[str] | None = None) -> int:
        if sinks is None:
            return self._db().execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
        sinks = list(sinks)
        if not sinks:
            return 0
        marks = ",".join("?" * len(sinks))
        return self._db().execute(f"SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND sink IN ({marks})",
                                  sinks).fetchone()[0]

    def orphaned(self, sinks: Iterable[str]) -> list[tuple[str, int]]:
        """Pending rows for sinks that are not configured now: (sink label, count)."""
        sinks = list(sinks)
        marks = ",".join("?" * len(sinks)) or "''"
        rows = self._db().execute(
            f"SELECT sink_label, COUNT(*) FROM outbox WHERE status = 'pending' AND sink NOT IN ({marks})"
            " GROUP BY sink_label", sinks).fetchall()
        return [(r[0], r[1]) for r in rows]

    # -- reading ----------------------------------------------------------------------------------

    def open_findings(self) -> list[dict]:
        rows = self._db().execute(
            "SELECT * FROM findings WHERE state IN ('new', 'ongoing') ORDER BY first_seen").fetchall()
        return [_finding_row(r) for r in rows]

    def history(self, limit: int = 50, fingerprint_prefix: str | None = None) -> list[dict]:
        query, args = "SELECT * FROM history", []
        if fingerprint_prefix:
            query += " WHERE fingerprint LIKE ?"
            args.append(fingerprint_prefix + "%")
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = self._db().execute(query, args).fetchall()
        return [dict(r) for r in reversed(rows)]

    def outbox(self, status: str | tuple | None = "pending", limit: int = 100) -> list[dict]:
        """Outbox rows (never their bodies), oldest first; `status`: one, several, or None for all."""
        query, args = ("SELECT id, sink_label, idempotency_key, event, fingerprint, status, created_at, attempts,"
                       " next_attempt_at, last_error, done_at FROM outbox"), []
        if status:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            query += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args.extend(statuses)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [dict(r) for r in self._db().execute(query, args).fetchall()]

    def counts_by_severity_and_cause(self) -> list[tuple[str, str, int]]:
        rows = self._db().execute(
            "SELECT severity, cause, COUNT(*) FROM findings WHERE state IN ('new', 'ongoing')"
            " GROUP BY severity, cause").fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


def _scope_view(row) -> dict:
    compose = json.loads(row["compose"]) if row["compose"] else None
    return {"subject": row["subject"], "container_id": row["container_id"],
            "container_name": row["container_name"], "compose": compose}


def _finding_row(row) -> dict:
    data = dict(row)
    data["finding"] = json.loads(data["finding"])
    data["compose"] = json.loads(data["compose"]) if data["compose"] else None
    return data


