"""The watch daemon: the scan pipeline on a schedule and on Docker events, plus the finding store.

    collect (doctor.collect.docker) ─> evaluate (doctor.engine) ─> report.build ─> Store.record ─> outbox ─> sinks

Nothing here diagnoses anything: a scan is exactly what `dockdoc scan` does, over all containers
(a full scan: at start, every --interval, and after the daemon comes back) or over the containers
of the subjects named by recent events (a targeted scan, debounced). What is new is the diff with
the store, which turns findings into new / ongoing / resolved and queues the events for delivery.

Threads: the main thread scans and records; `dockdoc-events` holds the Docker event stream and
reconnects with backoff when the daemon goes away; `dockdoc-delivery` drains the outbox. SIGTERM or
SIGINT stops the loop, lets the POST in flight finish, and closes the store.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import docker.errors
import requests.exceptions

from doctor import diagnose, report
from doctor.collect import connection
from doctor.collect import docker as collector
from doctor.errors import ContainerNotFound, DockerUnavailable
from doctor.sinks import Deliverer
from doctor.store import Observed, Store, subject_of

log = logging.getLogger("dockdoc.watch")

# Container events after which a container deserves a fresh diagnosis. Exec, attach, resize and
# the like say nothing about its health (and health checks run execs every few seconds).
TRIGGERS = frozenset({"create", "start", "restart", "die", "oom", "kill", "stop", "destroy", "health_status",
                      "pause", "unpause", "rename", "update"})


@dataclass
class Settings:
    patterns: list = field(default_factory=list)
    interval: float = 300.0
    debounce: float = 0.5
    remind: float | None = None
    resolve_after: float = 0.0
    min_severity: str = "warning"
    log_lines: int = 200
    use_exec: bool = False
    retry_base: float = 1.0
    retry_max: float = 300.0
    reconnect_max: float = 30.0
    drain_timeout: float = 30.0


# ---- the shared pipeline: report document → store → outbox ------------------------------------

def observations(document: dict) -> list[Observed]:
    """The report's findings with the subject each is about (compose service or container name)."""
    compose = {c["id"]: c.get("compose") for c in document.get("containers") or []}
    found = []
    for finding in document.get("findings") or []:
        container = finding.get("container") or {}
        project = compose.get(container.get("id"))
        found.append(Observed(finding, subject_of(container.get("name") or container.get("id"), project), project))
    return found


def unknown_subjects(document: dict, unknown) -> set:
    """(subject, rule) pairs the engine could not decide, from its (container id, rule) pairs."""
    subjects = {c["id"]: subject_of(c["name"], c.get("compose")) for c in document.get("containers") or []}
    return {(subjects[cid], rule) for cid, rule in unknown or () if cid in subjects}


def document_subjects(document: dict) -> set:
    return {subject_of(c["name"], c.get("compose")) for c in document.get("containers") or []}


def pattern_scope(patterns):
    """A scope (see Store.record) that covers the stored findings the patterns select, matched the
    way `dockdoc scan PATTERN` matches containers. None (everything) without patterns."""
    if not patterns:
        return None

    def covers(view: dict) -> bool:
        return wanted(_summary(view.get("container_id") or "", view.get("container_name") or "",
                               view.get("compose")), patterns)

    return covers


def _summary(container_id: str, name: str, compose: dict | None) -> dict:
    labels = {}
    if compose:
        labels = {collector.COMPOSE_PROJECT: compose.get("project"), collector.COMPOSE_SERVICE: compose.get("service")}
    return {"Id": container_id, "Names": [f"/{name}"], "Labels": labels}


def wanted(summary: dict, patterns) -> bool:
    """Does a container (a /containers/json summary) match one of the patterns, as `scan` matches?"""
    if not patterns:
        return True
    for pattern in patterns:
        try:
            collector.select([summary], [pattern])
            return True
        except ContainerNotFound:
            continue
    return False


def summary_subject(summary: dict) -> str:
    labels = summary.get("Labels") or {}
    names = [n.lstrip("/") for n in summary.get("Names") or [] if n.count("/") == 1] or \
        [n.lstrip("/") for n in summary.get("Names") or []] or [summary.get("Id", "")[:12]]
    compose = {"project": labels.get(collector.COMPOSE_PROJECT), "service": labels.get(collector.COMPOSE_SERVICE)}
    return subject_of(names[0], compose)


class Pipeline:
    """Record a report document in the store and queue its events for the sinks."""

    def __init__(self, store: Store, sinks: list, settings: Settings, metrics=None):
        self.store, self.sinks, self.settings, self.metrics = store, sinks, settings, metrics

    def record(self, document: dict, unknown, scope) -> list:
        events = self.store.record(
            observations(document), scope=scope, unknown=unknown_subjects(document, unknown),
            min_severity=self.settings.min_severity, sinks=self.sinks, remind=self.settings.remind,
            resolve_after=self.settings.resolve_after)
        for event in events:
            finding = event.finding
            log.info("%s %s %s on %s: %s", event.event, finding["severity"], finding["cause"],
                     event.subject + (f" {event.item}" if event.item else ""), finding["title"],
                     extra={"event": event.event, "fingerprint": event.fingerprint, "rule": finding["rule"]})
            if self.metrics:
                self.metrics.events.labels(event.event).inc()
        if self.metrics:
            self.metrics.set_findings(self.store.counts_by_severity_and_cause())
            self.metrics.set_outbox(self.store.outbox_depth([s.key for s in self.sinks]))
        return events


# ---- the daemon ----------------------------------------------------------------------------------

class Watcher:
    def __init__(self, settings: Settings, store: Store, sinks: list, setup: diagnose.Setup, metrics=None):
        self.settings = settings
        self.store = store
        self.sinks = sinks
        self.setup = setup  # rules after the config, and how to silence findings: as for scan
        self.metrics = metrics
        self.pipeline = Pipeline(store, sinks, settings, metrics)
        self.deliverer = Deliverer(store, sinks, metrics, retry_base=settings.retry_base,
                                   retry_max=settings.retry_max)
        self.options = collector.Options(log_lines=settings.log_lines, use_exec=settings.use_exec)
        self.stop = threading.Event()
        self.inbox: queue.Queue = queue.Queue()
        self._api = None  # the main thread's client for scans
        self._stream = None
        self._signals = 0
        self._scan_failing = False
        self._resolution_tries: dict[str, float] = {}

    # -- one-shot -----------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Scan everything, record, deliver what is due (until --drain-timeout), exit. SIGTERM and
        SIGINT (a timer's unit stopped mid-run) let the POST in flight finish and exit 0, as `run`."""
        self._install_signals()
        api = connection.connect()
        self._api = api
        if not self.scan_full(raise_errors=True):
            return 2
        self._drain_for_exit()
        return 0

    def _drain_for_exit(self) -> None:
        remaining = self.deliverer.drain(time.monotonic() + self.settings.drain_timeout, self.stop)
        if remaining:
            log.warning("%d deliveries could not be made yet; they wait in the outbox for the next run", remaining,
                        extra={"outbox": remaining})
        self.deliverer.close()

    # -- the daemon ---------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        for label, count in self.store.orphaned([s.key for s in self.sinks]):
            log.warning("%d deliveries wait in the outbox for %s, which is not configured now", count, label)
        delivery = threading.Thread(target=self.deliverer.serve, args=(self.stop,), name="dockdoc-delivery")
        events = threading.Thread(target=self._event_loop, name="dockdoc-events", daemon=True)
        delivery.start()
        events.start()
        log.info("watching Docker: full scan every %ss, events re-diagnose at once; sinks: %s",
                 _fmt(self.settings.interval), ", ".join(s.label for s in self.sinks) or "none (history only)",
                 extra={"state": self.store.path})
        try:
            self._main_loop()
        finally:
            self.stop.set()
            self.deliverer.wake.set()
            stream = self._stream
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - closing a dead stream
                    pass
            delivery.join(timeout=self.deliverer.lease)
            self.deliverer.close()
            log.info("stopped; outbox holds %d deliveries", self.store.outbox_depth([s.key for s in self.sinks]))
        return 0

    def _install_signals(self) -> None:
        def handler(signum, _frame):
            self._signals += 1
            if self._signals > 1:
                # A second signal while a delivery hangs: leave now. SQLite commits are atomic, and the
                # row in flight stays pending (its lease expires) to be retried with the same key.
                os._exit(128 + signum)
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _main_loop(self) -> None:
        pending: dict[str, list[float]] = {}  # subject -> [first event, due]
        next_full = None  # set when the event thread has connected
        while not self.stop.is_set():
            now = time.monotonic()
            if self.metrics:
                self.metrics.heartbeat()
            full_due = next_full is not None and now >= next_full
            due = [s for s, (_, at) in pending.items() if at <= now]
            # After a failed scan, try a full one again soon; the event thread also asks for one as
            # soon as the daemon is back.
            retry_at = time.monotonic() + min(self.settings.interval, self.settings.reconnect_max)
            if full_due:
                if self.scan_full():
                    pending.clear()
                    next_full = time.monotonic() + self.settings.interval
                else:
                    next_full = retry_at
            elif due:
                for subject in due:
                    pending.pop(subject, None)
                if not self.scan_subjects(set(due)):
                    next_full = min(next_full, retry_at) if next_full is not None else retry_at
            else:
                due_resolutions = self._due_resolutions()
                if due_resolutions:
                    self.scan_subjects(due_resolutions)
            deadlines = [at for _, at in pending.values()]
            if next_full is not None:
                deadlines.append(next_full)
            wait = min([1.0] + [max(0.0, d - time.monotonic()) for d in deadlines])
            try:
                message = self.inbox.get(timeout=wait)
            except queue.Empty:
                continue
            while True:
                kind = message[0]
                if kind == "full":
                    next_full = time.monotonic()  # now, ahead of any targeted scan
                elif kind == "event":
                    subject = message[1]
                    at = time.monotonic()
                    first, _ = pending.get(subject, (at, at))
                    # Debounce: wait for a quiet moment, but never longer than 4 debounce periods.
                    pending[subject] = [first, min(at + self.settings.debounce, first + 4 * self.settings.debounce)]
                try:
                    message = self.inbox.get_nowait()
                except queue.Empty:
                    break

    def _due_resolutions(self) -> set:
        """Subjects whose absent findings have waited out --resolve-after: scan them again (at most
        every 5 s each, in case a scan cannot settle them)."""
        if self.settings.resolve_after <= 0:
            return set()
        now, tried = time.time(), self._resolution_tries
        due = {view["subject"] for at, view in self.store.pending_resolutions(self.settings.resolve_after)
               if at <= now and now - tried.get(view["subject"], 0) >= 5}
        for subject in list(tried):
            if now - tried[subject] >= 5:
                del tried[subject]
        tried.update((subject, now) for subject in due)
        return due

    # -- scans --------------------------------------------------------------------------------------

    def scan_full(self, raise_errors: bool = False) -> bool:
        return self._scan("full", None, pattern_scope(self.settings.patterns), raise_errors)

    def scan_subjects(self, subjects: set) -> bool:
        patterns = self.settings.patterns
        base = pattern_scope(patterns)

        def scope(view: dict) -> bool:
            return view["subject"] in subjects and (base is None or base(view))

        return self._scan("targeted", subjects, scope, False)

    def _scan(self, kind: str, subjects: set | None, scope, raise_errors: bool) -> bool:
        started = time.monotonic()
        try:
            snapshot = self._collect(subjects)
            result = diagnose.diagnose(snapshot, self.setup)
            document = report.build(snapshot, result.findings, result.unknown, "info", "docker",
                                    result.suppressed, result.notices)
            self.pipeline.record(document, result.unknown, scope)
        except DockerUnavailable as exc:
            self._api = None
            if self.metrics:
                self.metrics.scanned(kind, False, time.monotonic() - started)
            if raise_errors:
                raise
            if not self._scan_failing:
                log.warning("scan failed: %s; waiting for the Docker daemon", exc)
            self._scan_failing = True
            return False
        except Exception:  # noqa: BLE001 - one bad scan must not end the daemon
            if raise_errors:
                raise
            if self.metrics:
                self.metrics.scanned(kind, False, time.monotonic() - started)
            log.exception("%s scan failed unexpectedly; the watch goes on", kind)
            return False
        self._scan_failing = False
        elapsed = time.monotonic() - started
        if self.metrics:
            self.metrics.scanned(kind, True, elapsed)
        if kind == "full":
            open_now = sum(count for _, _, count in self.store.counts_by_severity_and_cause())
            log.info("full scan: %d containers, %d open findings, %.2fs", len(snapshot["containers"]), open_now,
                     elapsed)
        else:
            log.debug("targeted scan of %s: %d containers, %.2fs", ", ".join(sorted(subjects or ())),
                      len(snapshot["containers"]), elapsed)
        self.deliverer.wake.set()
        return True

    def _collect(self, subjects: set | None) -> dict:
        """The containers the patterns (and, for a targeted scan, the subjects) select, collected as
        `dockdoc scan` collects them, from one list call."""
        if self._api is None:
            self._api = connection.connect()
        patterns = self.settings.patterns
        if subjects is None and not patterns:
            return collector.collect(self._api, None, options=self.options)  # everything

        def keep(summary: dict) -> bool:
            return wanted(summary, patterns) and (subjects is None or summary_subject(summary) in subjects)

        return collector.collect(self._api, options=self.options, keep=keep)

    # -- Docker events, and reconnecting ------------------------------------------------------------

    def _event_loop(self) -> None:
        delay, down_since, first = 1.0, None, True
        while not self.stop.is_set():
            try:
                api = connection.connect()
                stream = api.events(decode=True, filters={"type": "container"})
            except (DockerUnavailable, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    self._down(exc, first)
                self.stop.wait(delay * random.uniform(0.5, 1.0))
                delay = min(self.settings.reconnect_max, delay * 2)
                continue
            self._stream = stream
            if self.metrics:
                self.metrics.set_docker(True)
            if down_since is not None and not first:
                log.warning("the Docker daemon is back after %.0fs; rescanning everything (events during the "
                            "outage are lost)", time.monotonic() - down_since)
                if self.metrics:
                    self.metrics.reconnects.inc()
            elif down_since is not None:
                log.info("connected to the Docker daemon after %.0fs", time.monotonic() - down_since)
            first, delay, down_since = False, 1.0, None
            self.inbox.put(("full", "connected"))
            try:
                for event in stream:
                    self._on_event(event)
                reason: BaseException = ConnectionError("the daemon closed the event stream")
            except Exception as exc:  # noqa: BLE001 - any break of the stream means the same thing
                reason = exc
            self._stream = None
            if self.stop.is_set():
                break
            down_since = time.monotonic()
            self._down(reason, False)
            self.stop.wait(delay * random.uniform(0.5, 1.0))

    def _down(self, exc: BaseException, first: bool) -> None:
        """Say it once per outage; the reconnect attempts themselves are silent."""
        if self.metrics:
            self.metrics.set_docker(False)
        what = connection.describe_failure(exc) if not isinstance(exc, DockerUnavailable) else exc
        if first:
            log.warning("cannot reach the Docker daemon yet (%s); retrying with backoff", what)
        else:
            log.warning("lost the Docker daemon (%s); reconnecting with backoff", what)

    def _on_event(self, event: dict) -> None:
        action = (event.get("Action") or event.get("status") or "").split(":", 1)[0].strip()
        if self.metrics:
            self.metrics.docker_events.labels(action if action in TRIGGERS else "other").inc()
        if action not in TRIGGERS:
            return
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        container_id = actor.get("ID") or event.get("id") or ""
        summary = {"Id": container_id, "Names": [f"/{attributes.get('name', container_id[:12])}"],
                   "Labels": attributes}
        if not wanted(summary, self.settings.patterns):
            return
        self.inbox.put(("event", summary_subject(summary), action))


def _fmt(seconds: float) -> str:
    return f"{seconds:g}"


def run_watch(settings: Settings, store: Store, sinks: list, setup: diagnose.Setup, metrics=None,
              once: bool = False) -> int:
    watcher = Watcher(settings, store, sinks, setup, metrics)
    try:
        return watcher.run_once() if once else watcher.run()
    finally:
        store.close()


def post_document(document: dict, sinks: list, store: Store, settings: Settings, unknown=(),
                  complete: bool = False) -> int:
    """For `scan --post`: record a report built by `dockdoc scan` and deliver; returns what is
    still waiting in the outbox. Only the report's containers can resolve findings unless
    `complete` (the scan looked at every container)."""
    subjects = document_subjects(document)
    scope = None if complete else (lambda view: view["subject"] in subjects)
    pipeline = Pipeline(store, sinks, settings)
    pipeline.record(document, unknown, scope)
    deliverer = Deliverer(store, sinks, retry_base=settings.retry_base, retry_max=settings.retry_max)
    remaining = deliverer.drain(time.monotonic() + settings.drain_timeout)
    deliverer.close()
    return remaining
