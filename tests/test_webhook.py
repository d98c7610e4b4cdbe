"""Webhook sinks against a real HTTP receiver on 127.0.0.1: payloads, signatures, Slack's format,
retries with backoff, a receiver that goes away, one that acknowledges too late, and what the logs
never show. The `Receiver` here is also what tests/test_watch_docker.py posts to."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from doctor import logsetup, sinks
from doctor.sinks import Deliverer, SinkConfigError
from doctor.sinks.webhook import PAYLOAD_SCHEMA, verify
from doctor.store import Observed, Store, subject_of


class Receiver:
    """A real HTTP server in a thread that records every POST. `script` answers per request index:
    a status, or (status, headers, delay). It can be stopped and started again on the same port."""

    def __init__(self, port: int | None = None, script=None):
        self.port = port or free_port()
        self.script = script or (lambda index, request: 200)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.server = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.time()}
                try:
                    request["json"] = json.loads(body)
                except ValueError:
                    request["json"] = None
                with receiver.lock:
                    index = len(receiver.requests)
                    receiver.requests.append(request)
                answer = receiver.script(index, request)
                status, headers, delay = (answer, {}, 0) if isinstance(answer, int) else answer
                if delay:
                    time.sleep(delay)
                data = b"ok" if status < 300 else b"nope"
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def posts(self, predicate=lambda r: True) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if predicate(r)]

    def wait_for(self, predicate, count: int = 1, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.posts(predicate)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {count} POST(s); got "
                             f"{[r['json'] and r['json'].get('summary') for r in self.posts()]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_finding(name="web", rule="dockdoc/exit-error", cause="exit-error", severity="error"):
    return {"rule": rule, "cause": cause, "severity": severity, "title": "Main process exited with an error",
            "message": f"{name} exited with code 3: application-specific error code",
            "evidence": ["State.ExitCode = 3 after 0.1s running", "boom <&>"], "fix": "Fix the error.",
            "docs": None, "container": {"id": "abc123", "name": name}}


def queue_event(store, sink_list, name="web", now=None, also=()):
    """Record a scan that found `name` (and the names in `also`) exiting with an error."""
    names = [name, *also]
    return store.record([Observed(make_finding(n), subject_of(n, None), None) for n in names],
                        sinks=sink_list, now=now)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db")
    yield s
    s.close()


def test_generic_payload_is_documented_shape_with_idempotency_key(store, receiver):
    sink = sinks.parse(receiver.url())
    [event] = queue_event(store, [sink])
    deliverer = Deliverer(store, [sink])
    assert deliverer.deliver_due() == 1
    [post] = receiver.posts()
    body = post["json"]
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["headers"]["Idempotency-Key"] == body["idempotency_key"]
    assert post["headers"]["X-Dockdoc-Event"] == "new"
    assert "X-Dockdoc-Signature" not in post["headers"]
    assert body["schema"] == PAYLOAD_SCHEMA and body["event"] == "new" and body["status"] == "open"
    assert body["fingerprint"] == event.fingerprint and body["subject"] == "container:web"
    assert body["finding"]["cause"] == "exit-error" and body["finding"]["fix"] == "Fix the error."
    assert body["summary"].startswith("NEW error exit-error on web")
    assert store.outbox_depth([sink.key]) == 0
    deliverer.close()


def test_hmac_signature_when_the_secret_is_set(store, receiver, monkeypatch):
    monkeypatch.setenv("DOCKDOC_WEBHOOK_SECRET", "s3cret-value")
    sink = sinks.parse(f"webhook={receiver.url()}")
    queue_event(store, [sink])
    Deliverer(store, [sink]).deliver_due()
    [post] = receiver.posts()
    headers = post["headers"]
    assert headers["X-Dockdoc-Signature"].startswith("sha256=")
    assert verify("s3cret-value", headers["X-Dockdoc-Timestamp"], post["body"], headers["X-Dockdoc-Signature"])
    assert not verify("wrong", headers["X-Dockdoc-Timestamp"], post["body"], headers["X-Dockdoc-Signature"])
    assert not verify("s3cret-value", headers["X-Dockdoc-Timestamp"], post["body"] + b" ",
                      headers["X-Dockdoc-Signature"])


def test_slack_format(store, receiver):
    sink = sinks.parse(f"slack={receiver.url('/services/T0/B0/xyz')}")
    queue_event(store, [sink], now=1)
    store.record([], sinks=[sink], now=2)  # resolved
    Deliverer(store, [sink]).deliver_due()
    new, resolved = [p["json"] for p in receiver.posts()]
    assert new["text"].startswith("NEW error exit-error on web")
    assert new["blocks"][0]["type"] == "section"
    text = json.dumps(new["blocks"])
    assert "Fix:" in text and "boom &lt;&amp;&gt;" in text  # Slack's escaping of <, > and &
    assert resolved["text"].startswith("RESOLVED error exit-error on web")


def test_spec_parsing():
    assert sinks.parse("https://example.test/hook").kind == "webhook"
    assert sinks.parse("slack=https://example.test/x").kind == "slack"
    assert sinks.parse("https://hooks.slack.com/services/T/B/C").kind == "slack"
    assert sinks.parse("https://example.test/h?a=b=c").url == "https://example.test/h?a=b=c"
    assert sinks.parse("webhook=https://hooks.slack.com/services/T/B/C").kind == "webhook"
    for bad in ["ftp://example.test/x", "example.test/hook", "https://", "http://exa mple/x", "",
                "teams=https://example.test/x", "https://example.test:99999/x"]:
        with pytest.raises(SinkConfigError) as info:
            sinks.parse(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(SinkConfigError) as info:
        sinks.parse("ftp://user:pw@example.test/T000/SECRETPATH")
    assert "SECRETPATH" not in str(info.value) and "pw" not in str(info.value)


def test_server_errors_are_retried_with_backoff_under_one_key(store):
    statuses = [503, 500, 200]
    receiver = Receiver(script=lambda index, request: statuses[min(index, 2)]).start()
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_base=0.05, retry_max=0.2)
        assert deliverer.drain(time.monotonic() + 10) == 0
        posts = receiver.posts()
        assert len(posts) == 3
        assert len({p["headers"]["Idempotency-Key"] for p in posts}) == 1
        assert len({p["body"] for p in posts}) == 1  # the very same bytes each time
    finally:
        receiver.stop()


def test_backoff_grows_with_jitter_and_respects_the_cap(store):
    deliverer = Deliverer(store, [], retry_base=1, retry_max=60)
    for attempt in range(10):
        delay = deliverer.backoff(attempt)
        assert min(60, 2 ** attempt) * 0.5 <= delay <= min(60, 2 ** attempt)
    assert deliverer.backoff(3, retry_after=7) == 7
    assert deliverer.backoff(3, retry_after=600) == 60


def test_429_retry_after_is_honoured(store):
    receiver = Receiver(script=lambda index, request: (429, {"Retry-After": "1"}, 0) if index == 0 else 200).start()
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_base=0.01)
        deliverer.deliver_due()
        assert 0.5 < store.next_due([sink.key]) - time.time() <= 1.0
        assert deliverer.drain(time.monotonic() + 10) == 0
        first, second = receiver.posts()
        assert second["at"] - first["at"] >= 0.9
    finally:
        receiver.stop()


@pytest.mark.parametrize("status,outcome", [(400, "rejected"), (404, "rejected"), (409, "delivered")])
def test_permanent_refusals_and_already_have_it(store, status, outcome):
    receiver = Receiver(script=lambda index, request: status).start()
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_base=0.01)
        assert deliverer.drain(time.monotonic() + 5) == 0
        assert len(receiver.posts()) == 1  # never retried
        [row] = store.outbox(None)
        assert row["status"] == outcome
    finally:
        receiver.stop()


def test_receiver_down_for_a_while_then_delivered_exactly_once(store):
    port = free_port()
    sink = sinks.parse(f"http://127.0.0.1:{port}/hook")
    queue_event(store, [sink], name="a", also=["b"])
    deliverer = Deliverer(store, [sink], retry_base=0.05, retry_max=0.3)
    stop = threading.Event()
    thread = threading.Thread(target=deliverer.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # several refused attempts
        attempts = {r["attempts"] for r in store.outbox()}
        assert min(attempts) >= 2
        receiver = Receiver(port=port).start()
        try:
            receiver.wait_for(lambda r: True, count=2, timeout=10)
            time.sleep(1.0)
            posts = receiver.posts()
            assert sorted(p["json"]["subject"] for p in posts) == ["container:a", "container:b"]
            assert store.outbox_depth([sink.key]) == 0
        finally:
            receiver.stop()
    finally:
        stop.set()
        deliverer.wake.set()
        thread.join(5)


def test_late_acknowledgement_is_retried_under_the_same_key(store):
    # The receiver takes the first POST but answers after the client has given up: dockdoc cannot
    # know it arrived, so it retries; the key lets the receiver see it already has the event.
    receiver = Receiver(script=lambda index, request: (200, {}, 1.5) if index == 0 else 200).start()
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_base=0.05, timeout=(1.0, 0.5))
        assert deliverer.drain(time.monotonic() + 10) == 0
        posts = receiver.posts()
        assert len(posts) == 2
        assert len({p["headers"]["Idempotency-Key"] for p in posts}) == 1
    finally:
        receiver.stop()


def test_logs_never_show_webhook_urls_or_secrets(store, monkeypatch):
    stream = io.StringIO()
    logsetup.setup("json", "DEBUG", stream=stream)
    try:
        monkeypatch.setenv("DOCKDOC_WEBHOOK_SECRET", "hmac-secret-123")
        port = free_port()  # nobody listens: the failure text names the URL's path
        secret_url = f"http://127.0.0.1:{port}/services/T000/B000/TOKENTOKEN?key=QUERYSECRET"
        sink = sinks.parse(f"slack={secret_url}")
        queue_event(store, [sink])
        Deliverer(store, [sink], retry_base=0.01).deliver_due()
        log = logging.getLogger("dockdoc.test")
        log.warning("posting to %s with %s", secret_url, "hmac-secret-123", extra={"url": secret_url})
        log.info("other host https://user:pw@example.test/path?token=x stays redacted")
    finally:
        logsetup.setup("text", "INFO")
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert any("failed" in line["msg"] for line in lines)
    for secret in ("TOKENTOKEN", "QUERYSECRET", "hmac-secret-123", "T000", "pw@", "token=x"):
        assert secret not in output, secret
    assert f"127.0.0.1:{port}/…" in output


class StallingReceiver:
    """A raw HTTP/1.1 server that answers every POST with a status line and headers at once, then
    stalls in the body (as a receiver behind a slow proxy can). It counts the POSTs it got."""

    def __init__(self, status: int = 200, stall: float = 3.0):
        self.status, self.stall = status, stall
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.posts = 0
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            self.posts += 1
            conn.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Length: 100000000\r\n\r\nstarted".encode())
            self.closed.wait(self.stall)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def test_an_acknowledged_post_is_delivered_even_if_the_body_stalls(store):
    # The status line said 200: the receiver has the event. A body that never finishes (or is
    # huge) must neither turn that into a retry (a duplicate message) nor hold the delivery thread.
    receiver = StallingReceiver(200, stall=5.0)
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_base=0.05, timeout=(1.0, 0.5))
        started = time.monotonic()
        assert deliverer.drain(time.monotonic() + 4) == 0
        assert time.monotonic() - started < 3
        assert receiver.posts == 1
        [row] = store.outbox(None)
        assert row["status"] == "delivered"
    finally:
        receiver.close()


def test_a_refusal_whose_body_stalls_is_still_a_refusal(store):
    receiver = StallingReceiver(503, stall=5.0)
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_base=30, timeout=(1.0, 0.5))
        deliverer.deliver_due()
        [row] = store.outbox(None)
        assert row["status"] == "pending" and row["last_error"].startswith("HTTP 503"), row
    finally:
        receiver.close()


def test_a_receiver_that_hangs_does_not_hold_up_another_sink(store):
    hanging = Receiver(script=lambda index, request: (200, {}, 2.0)).start()  # answers after the timeout
    up = Receiver().start()
    try:
        a, b = sinks.parse(hanging.url()), sinks.parse(up.url("/other"))
        queue_event(store, [a, b], name="n0", also=[f"n{i}" for i in range(1, 6)])
        deliverer = Deliverer(store, [a, b], retry_base=30, timeout=(1.0, 0.3))
        started = time.time()
        deliverer.deliver_due()
        assert len(up.posts()) == 6
        assert up.posts()[-1]["at"] - started < 0.9  # one timeout of the hanging one, not six
        assert len(hanging.posts()) == 6  # each of its rows was still tried once
    finally:
        hanging.stop()
        up.stop()


def test_drain_returns_when_stopped_during_a_wait(store):
    receiver = Receiver(script=lambda index, request: (429, {"Retry-After": "20"}, 0)).start()
    try:
        sink = sinks.parse(receiver.url())
        queue_event(store, [sink])
        deliverer = Deliverer(store, [sink], retry_max=60)
        stop = threading.Event()
        threading.Timer(0.5, stop.set).start()  # what SIGTERM's handler does in `watch --once`
        started = time.monotonic()
        assert deliverer.drain(time.monotonic() + 30, stop) == 1
        assert time.monotonic() - started < 5
    finally:
        receiver.stop()
