"""Sinks: where finding events go. A registry of kinds (like the reporters'), the `--post` spec
parser, and the `Deliverer` that drains the store's outbox with retries.

`--post` takes `URL` or `KIND=URL`, KIND one of `KINDS` (`webhook`, the default, or `slack`; a URL
on hooks.slack.com is Slack's without saying so). Every event is rendered once per sink when it is
queued, so a retry sends the very same bytes under the very same idempotency key.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from doctor.errors import DockdocError
from doctor.logsetup import REDACT, redact_url

log = logging.getLogger("dockdoc.sinks")

KINDS: dict[str, Callable[[str], "Sink"]] = {}
_SPEC = re.compile(r"^([a-z][a-z0-9_-]*)=(.*)$", re.S)
SLACK_HOSTS = ("hooks.slack.com",)


class SinkConfigError(DockdocError):
    """A `--post` value is not a usable sink."""


def register(kind: str):
    def wrap(cls):
        KINDS[kind] = cls
        cls.kind = kind
        return cls

    return wrap


class Sink:
    """A destination. `key` identifies it in the outbox without holding its secret URL."""

    kind = "?"

    def __init__(self, url: str):
        self.url = url
        self.key = hashlib.sha256(f"{self.kind}\0{url}".encode()).hexdigest()[:16]
        self.label = f"{self.kind}={redact_url(url)}"

    def render(self, event: dict, idempotency_key: str) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def send(self, session, body: bytes, idempotency_key: str, event: str, timeout) -> "Outcome":
        raise NotImplementedError  # pragma: no cover - abstract

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class Outcome:
    """What one attempt achieved: `delivered`, `retry` (with an optional server-given delay) or
    `rejected` (the receiver will never take it: retrying would not help)."""

    def __init__(self, status: str, detail: str = "", retry_after: float | None = None):
        assert status in ("delivered", "retry", "rejected")
        self.status, self.detail, self.retry_after = status, detail, retry_after

    def __repr__(self) -> str:
        return f"Outcome({self.status}, {self.detail!r})"


def _shown(url: str) -> str:
    """A bad URL as an error message may show it: without anything that could be its secret."""
    if "://" in url:
        return redact_url(url)
    head = re.split(r"[/?#]", url, maxsplit=1)[0][:60]
    return repr(head + ("/…" if len(head) < len(url) else ""))


def validate_url(url: str, spec: str) -> str:
    shown = _shown(url)
    if not url or any(c.isspace() for c in url):
        raise SinkConfigError(f"invalid --post value {shown}: a URL must not be empty or contain spaces",
                              "use --post URL or --post slack=URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise SinkConfigError(f"invalid --post URL {shown}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise SinkConfigError(f"invalid --post URL {shown}: the scheme must be http or https",
                              f"kinds: {', '.join(sorted(KINDS))}; write --post KIND=URL")
    if not parts.hostname:
        raise SinkConfigError(f"invalid --post URL {shown}: it names no host")
    return url


def parse(spec: str) -> Sink:
    """`URL` or `KIND=URL` → a sink. Raises SinkConfigError with the URL's secret parts hidden."""
    spec = (spec or "").strip()
    kind, url = None, spec
    match = _SPEC.match(spec)
    if match and not spec.startswith(("http://", "https://")):
        kind, url = match.group(1), match.group(2).strip()
        if kind not in KINDS:
            raise SinkConfigError(f"unknown sink kind {kind!r} in --post",
                                  f"use one of: {', '.join(sorted(KINDS))} (e.g. --post slack=https://...)")
    validate_url(url, spec)
    if kind is None:
        kind = "slack" if (urlsplit(url).hostname or "").lower() in SLACK_HOSTS else "webhook"
    REDACT.add_url(url)
    return KINDS[kind](url)


def parse_all(specs) -> list[Sink]:
    sinks, seen = [], set()
    for spec in specs or ():
        sink = parse(spec)
        if sink.key not in seen:
            seen.add(sink.key)
            sinks.append(sink)
    return sinks


class Deliverer:
    """Drains the outbox: every due row of a configured sink is claimed, posted, and marked.

    Retries back off exponentially with jitter: attempt n waits uniform(0.5, 1) × min(cap, base·2ⁿ),
    or what a 429/503 `Retry-After` asks for (within the cap). A row is never dropped for being
    retried too often: only a receiver's permanent refusal (a 4xx other than 408/409/425/429)
    moves it out of the queue, as `rejected`, and says so in the log.
    """

    def __init__(self, store, sinks: list[Sink], metrics=None, retry_base: float = 1.0,
                 retry_max: float = 300.0, timeout: tuple[float, float] = (5.0, 10.0)):
        import requests

        self.store = store
        self.sinks = {s.key: s for s in sinks}
        self.metrics = metrics
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.timeout = timeout
        self.lease = sum(timeout) * 2 + 5
        self.session = requests.Session()
        self.wake = threading.Event()
        self._failing: set[str] = set()

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        import random

        if retry_after is not None:
            return max(0.0, min(self.retry_max, retry_after))
        return min(self.retry_max, self.retry_base * (2 ** min(attempts, 30))) * random.uniform(0.5, 1.0)

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """Try every due row once; returns how many were attempted. Sink by sink, in rounds, and a
        sink's turn ends at its first failure: a receiver that hangs delays the others by one
        timeout per round, not by one per row queued for it."""
        attempted, busy = 0, True
        while busy and not (stop and stop.is_set()):
            busy = False
            for key in self.sinks:
                for row in self.store.due([key], limit=20):
                    if stop and stop.is_set():
                        break
                    if not self.store.claim(row.id, self.lease):
                        continue
                    busy = True
                    attempted += 1
                    if self._attempt(row) == "retry":
                        break
        self._gauge()
        return attempted

    def _attempt(self, row) -> str:
        sink = self.sinks[row.sink]
        started = time.monotonic()
        try:
            outcome = sink.send(self.session, row.body, row.idempotency_key, row.event, self.timeout)
        except Exception as exc:  # noqa: BLE001 - any transport failure is "try again later"
            outcome = Outcome("retry", REDACT(f"{type(exc).__name__}: {exc}")[:300])
        elapsed = time.monotonic() - started
        if self.metrics:
            self.metrics.delivery(sink.kind, outcome.status, elapsed)
        if outcome.status == "delivered":
            self.store.delivered(row.id)
            if row.sink in self._failing:
                self._failing.discard(row.sink)
                log.info("sink %s is delivering again", sink.label, extra={"sink": sink.label})
            log.info("delivered %s %s to %s", row.event, row.fingerprint, sink.label,
                     extra={"event": row.event, "fingerprint": row.fingerprint, "sink": sink.label,
                            "attempt": row.attempts + 1, "idempotency_key": row.idempotency_key})
        elif outcome.status == "rejected":
            self.store.rejected(row.id, outcome.detail)
            log.error("%s refused %s %s for good: %s (kept in the outbox as rejected)", sink.label, row.event,
                      row.fingerprint, outcome.detail, extra={"sink": sink.label, "fingerprint": row.fingerprint})
        else:
            delay = self.backoff(row.attempts, outcome.retry_after)
            self.store.retry_later(row.id, outcome.detail, time.time() + delay)
            level = logging.WARNING if row.sink not in self._failing else logging.DEBUG
            self._failing.add(row.sink)  # say it once per outage of a sink, not once per retry
            log.log(level, "delivery to %s failed (%s); retrying with backoff, the outbox keeps it", sink.label,
                    outcome.detail, extra={"sink": sink.label, "attempt": row.attempts + 1,
                                           "retry_in_s": round(delay, 2)})
        return outcome.status

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.set_outbox(self.store.outbox_depth(self.sinks))

    def next_wait(self, ceiling: float) -> float:
        due = self.store.next_due(self.sinks)
        if due is None:
            return ceiling
        return max(0.0, min(ceiling, due - time.time()))

    def serve(self, stop: threading.Event) -> None:
        """The delivery thread: deliver, then sleep until the next due row or a `wake`."""
        while not stop.is_set():
            try:
                self.deliver_due(stop)
                wait = self.next_wait(30.0)
            except Exception:  # noqa: BLE001 - a locked or full disk must not end the watch
                log.exception("delivery loop error; retrying in 5s")
                wait = 5.0
            if wait > 0:
                self.wake.wait(wait)
            self.wake.clear()

    def drain(self, deadline: float, stop: threading.Event | None = None) -> int:
        """For one-shot runs: keep delivering until nothing is pending or `deadline` (monotonic).
        Returns what is still pending."""
        while not (stop and stop.is_set()):
            self.deliver_due(stop)
            remaining = self.store.outbox_depth(self.sinks)
            if remaining == 0:
                return 0
            wait = self.next_wait(deadline - time.monotonic())
            if time.monotonic() + wait >= deadline:
                return remaining
            (stop or threading.Event()).wait(wait)  # a signal that sets `stop` ends the wait
        return self.store.outbox_depth(self.sinks)

    def close(self) -> None:
        self.session.close()


# Imported for their registrations; at the bottom because they import from here.
from doctor.sinks import webhook  # noqa: E402,F401
