"""Prometheus metrics and a plain health endpoint for `dockdoc watch --metrics-addr HOST:PORT`.

    GET /metrics   Prometheus text format (prometheus-client, a registry of our own)
    GET /healthz   200 {"status": "ok", ...} while the watch loop turns; 503 when it has stalled
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from doctor import __version__
from doctor.errors import DockdocError


class MetricsError(DockdocError):
    """The metrics address is malformed or cannot be bound."""


class Metrics:
    def __init__(self):
        if hasattr(prometheus_client, "disable_created_metrics"):
            prometheus_client.disable_created_metrics()  # *_created series only double the output
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge("dockdoc_info", "dockdoc build information", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.findings = Gauge("dockdoc_findings", "Open findings by severity and cause", ["severity", "cause"],
                              registry=r)
        self.events = Counter("dockdoc_finding_events_total", "Finding lifecycle events (new, resolved, reminder)",
                              ["event"], registry=r)
        self.scans = Counter("dockdoc_scans_total", "Scans by kind (full, targeted) and outcome (ok, error)",
                             ["kind", "outcome"], registry=r)
        self.scan_duration = Histogram("dockdoc_scan_duration_seconds", "Duration of a scan (collect+evaluate+store)",
                                       ["kind"], registry=r,
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.deliveries = Counter("dockdoc_deliveries_total", "Delivery attempts by sink kind and outcome "
                                  "(delivered, retry, rejected)", ["sink", "outcome"], registry=r)
        self.delivery_failures = Counter("dockdoc_delivery_failures_total",
                                         "Delivery attempts that did not deliver", ["sink"], registry=r)
        self.delivery_duration = Histogram("dockdoc_delivery_duration_seconds", "Duration of one POST",
                                           ["sink"], registry=r, buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30))
        self.outbox_depth = Gauge("dockdoc_outbox_depth", "Deliveries waiting in the outbox", registry=r)
        self.docker_up = Gauge("dockdoc_docker_connected", "1 while the Docker daemon answers", registry=r)
        self.docker_events = Counter("dockdoc_docker_events_total", "Docker container events received",
                                     ["action"], registry=r)
        self.reconnects = Counter("dockdoc_docker_reconnects_total", "Times the Docker connection came back",
                                  registry=r)
        self.last_scan = Gauge("dockdoc_last_scan_timestamp_seconds", "When the last successful scan ended",
                               registry=r)
        self._heartbeat = time.monotonic()
        self._outbox = 0
        self._state = {"docker": "unknown", "last_scan": None}
        self.stall_after = 120.0

    # -- updates from the watch ----------------------------------------------------------------------

    def delivery(self, sink: str, outcome: str, seconds: float) -> None:
        self.deliveries.labels(sink, outcome).inc()
        self.delivery_duration.labels(sink).observe(seconds)
        if outcome != "delivered":
            self.delivery_failures.labels(sink).inc()

    def set_findings(self, counts) -> None:
        self.findings.clear()
        for severity, cause, count in counts:
            self.findings.labels(severity, cause).set(count)

    def set_outbox(self, depth: int) -> None:
        self._outbox = depth
        self.outbox_depth.set(depth)

    def set_docker(self, connected: bool) -> None:
        self.docker_up.set(1 if connected else 0)
        self._state["docker"] = "connected" if connected else "disconnected"

    def scanned(self, kind: str, ok: bool, seconds: float) -> None:
        self.scans.labels(kind, "ok" if ok else "error").inc()
        self.scan_duration.labels(kind).observe(seconds)
        if ok:
            self.last_scan.set(time.time())
            self._state["last_scan"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def heartbeat(self) -> None:
        self._heartbeat = time.monotonic()

    def health(self) -> tuple[int, dict]:
        age = time.monotonic() - self._heartbeat
        status = "ok" if age < self.stall_after else "stalled"
        body = {"status": status, "docker": self._state["docker"], "last_scan": self._state["last_scan"],
                "outbox": self._outbox, "loop_age_seconds": round(age, 1)}
        return (200 if status == "ok" else 503), body

    # -- serving --------------------------------------------------------------------------------------

    def serve(self, address: str) -> ThreadingHTTPServer:
        host, port = parse_address(address)
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    data, kind, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/health", "/"):
                    code, body = metrics.health()
                    data, kind = (json.dumps(body) + "\n").encode(), "application/json"
                else:
                    data, kind, code = b"not found: try /metrics or /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # scrapes every 15s are not news
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsServer", (ThreadingHTTPServer,), {"address_family": family,
                                                                       "daemon_threads": True})
        try:
            server = server_class((host, port), Handler)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {address}: {exc.strerror or exc}",
                               "choose a free --metrics-addr HOST:PORT") from exc
        thread = threading.Thread(target=server.serve_forever, name="dockdoc-metrics", daemon=True)
        thread.start()
        return server


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[v6]:PORT`."""
    text = (address or "").strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsError(f"invalid --metrics-addr {address!r}", "write HOST:PORT, e.g. 127.0.0.1:9464 or :9464")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
