"""HTTP sinks: a generic JSON webhook and Slack's incoming webhooks (see docs/watch.md).

Every POST carries `Idempotency-Key` (one per event and sink, the same on every retry). When
DOCKDOC_WEBHOOK_SECRET is set, `X-Dockdoc-Signature: sha256=<hex>` is the HMAC-SHA256 of
`<X-Dockdoc-Timestamp>.<body>` under that secret, so a receiver can check origin and freshness.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import hmac
import json
import os
import socket
import time

from doctor import __version__
from doctor.logsetup import REDACT
from doctor.sinks import Outcome, Sink, register

PAYLOAD_SCHEMA = "dockdoc.event/1"
SECRET_ENV = "DOCKDOC_WEBHOOK_SECRET"
HOSTNAME_ENV = "DOCKDOC_HOSTNAME"
RETRYABLE = {408, 425, 429}
# 409 Conflict is how receivers commonly say "I already have this idempotency key".
ALREADY_HAVE = {409}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def hostname() -> str:
    return os.environ.get(HOSTNAME_ENV) or socket.gethostname()


def summary(event: dict) -> str:
    """One line a human reads first: `NEW error exit-error: web (shop/web) exited with code 3`."""
    finding = event["finding"]
    word = {"new": "NEW", "resolved": "RESOLVED", "reminder": "STILL OPEN"}.get(event["event"], event["event"])
    where = event["subject"].split(":", 1)[-1]
    item = f" port {event['item']}" if event.get("item") else ""
    return f"{word} {finding['severity']} {finding['cause']} on {where}{item}: {finding['title']}"


def payload(event: dict, idempotency_key: str) -> dict:
    """The generic webhook's JSON document (schema `dockdoc.event/1`)."""
    finding = event["finding"]
    return {
        "schema": PAYLOAD_SCHEMA,
        "idempotency_key": idempotency_key,
        "event_id": event["event_id"],
        "event": event["event"],
        "status": "resolved" if event["event"] == "resolved" else "open",
        "occurred_at": _iso(event["at"]),
        "summary": summary(event),
        "fingerprint": event["fingerprint"],
        "subject": event["subject"],
        "item": event.get("item") or None,
        "first_seen": _iso(event.get("first_seen")),
        "last_seen": _iso(event.get("last_seen")),
        "resolved_at": _iso(event.get("resolved_at")),
        "finding": {
            "rule": finding["rule"],
            "cause": finding["cause"],
            "severity": finding["severity"],
            "title": finding["title"],
            "message": finding.get("message"),
            "evidence": finding.get("evidence") or [],
            "fix": finding.get("fix"),
            "docs": finding.get("docs"),
            "port": finding.get("port"),
            "container": finding.get("container"),
        },
        "host": hostname(),
        "dockdoc_version": __version__,
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance: float = 300.0) -> bool:
    """What a receiver does (and what the tests do): constant-time compare, reject stale timestamps."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature or "")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _head_of_body(response, limit: int = 200) -> str:
    """Up to `limit` characters of a response body, or what arrived before it failed or stalled."""
    data = b""
    try:
        for chunk in response.iter_content(chunk_size=limit):
            data += chunk
            if len(data) >= limit:
                break
    except Exception:  # noqa: BLE001 - the body is only an explanation
        pass
    return data[:limit].decode(response.encoding or "utf-8", errors="replace")


class HttpSink(Sink):
    content_type = "application/json"

    def headers(self, body: bytes, idempotency_key: str, event: str) -> dict:
        headers = {
            "Content-Type": self.content_type,
            "User-Agent": f"dockdoc/{__version__}",
            "Idempotency-Key": idempotency_key,
            "X-Dockdoc-Event": event,
        }
        secret = os.environ.get(SECRET_ENV)
        if secret:
            REDACT.add_secret(secret)
            timestamp = str(int(time.time()))
            headers["X-Dockdoc-Timestamp"] = timestamp
            headers["X-Dockdoc-Signature"] = sign(secret, timestamp, body)
        return headers

    def send(self, session, body: bytes, idempotency_key: str, event: str, timeout) -> Outcome:
        # The status line decides. The body is only read (a little of it) to explain a refusal: a
        # receiver whose body stalls or never ends must not turn a 200 into a retry (a duplicate)
        # nor hold the delivery thread or fill its memory.
        response = session.post(self.url, data=body, headers=self.headers(body, idempotency_key, event),
                                timeout=timeout, allow_redirects=False, stream=True)
        try:
            code = response.status_code
            if 200 <= code < 300 or code in ALREADY_HAVE:
                return Outcome("delivered", f"HTTP {code}")
            text = REDACT(_head_of_body(response).strip())
        finally:
            response.close()
        detail = f"HTTP {code}" + (f": {text}" if text else "")
        if code >= 500 or code in RETRYABLE:
            return Outcome("retry", detail, _retry_after(response.headers.get("Retry-After")))
        if 300 <= code < 400:
            detail += " (redirect not followed: configure the final URL)"
        return Outcome("rejected", detail)


@register("webhook")
class WebhookSink(HttpSink):
    """The generic JSON webhook: `payload()` as the body."""

    def render(self, event: dict, idempotency_key: str) -> bytes:
        return json.dumps(payload(event, idempotency_key), sort_keys=True, ensure_ascii=False).encode()


_SLACK_ICON = {"new": {"error": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"},
               "reminder": ":bell:", "resolved": ":white_check_mark:"}
SLACK_TEXT_LIMIT = 2900  # a section block takes 3000 characters


def _slack_escape(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@register("slack")
class SlackSink(HttpSink):
    """Slack incoming webhooks (and the Slack-compatible ones of Mattermost, Rocket.Chat…):
    `text` for notifications, blocks for the message, the evidence and the fix."""

    def render(self, event: dict, idempotency_key: str) -> bytes:
        finding = event["finding"]
        icon = _SLACK_ICON[event["event"]]
        if isinstance(icon, dict):
            icon = icon.get(finding["severity"], ":warning:")
        head = f"{icon} {_slack_escape(summary(event))}"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*"}}]
        if event["event"] != "resolved":
            body = _slack_escape(finding.get("message") or "")
            evidence = "\n".join(finding.get("evidence") or [])
            if evidence:
                body += f"\n```{_slack_escape(evidence)[:1500]}```"
            if finding.get("fix"):
                body += f"\n*Fix:* {_slack_escape(finding['fix'])}"
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:SLACK_TEXT_LIMIT]}})
        else:
            since = _iso(event.get("first_seen"))
            blocks.append({"type": "section", "text": {"type": "mrkdwn",
                           "text": f"No longer found (open since {since})."}})
        context = f"{hostname()} · `{finding['rule']}` · fingerprint `{event['fingerprint']}`"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
        return json.dumps({"text": summary(event), "blocks": blocks}, ensure_ascii=False).encode()
