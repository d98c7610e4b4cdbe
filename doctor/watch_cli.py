"""The `watch` and `history` commands, and `post_report` for `scan --post`.

The lead's CLI adds them with `register(app)`; errors are DockdocError subclasses, which the CLI's
`main()` turns into one line and exit code 2.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import sys
import time
from typing import List, Optional

import typer

from doctor import options
from doctor.errors import DockdocError

DEFAULT_INTERVAL = "5m"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(DockdocError):
    """A malformed option value."""


def parse_duration(text: str, option: str) -> float:
    """`300`, `90s`, `5m`, `1h30m`, `24h`, `500ms`, `1d` → seconds."""
    value = (text or "").strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise UsageError(f"invalid duration for {option}: {text!r}", "write e.g. 30s, 5m, 1h30m, 24h")
    return sum(float(n) * _UNITS[u] for n, u in parts)


class LogFormat(str, enum.Enum):
    text = "text"
    json = "json"


class HistoryFormat(str, enum.Enum):
    table = "table"
    json = "json"


def _open_store(state: str | None):
    from doctor.store import Store

    return Store(state)


def watch(
    containers: Optional[List[str]] = typer.Argument(None, help="Names, ids or globs to watch (default: all)."),
    post: Optional[List[str]] = options.Post,
    state: Optional[str] = options.State,
    interval: str = typer.Option(DEFAULT_INTERVAL, "--interval", help="Full rescan period (e.g. 30s, 5m, 1h)."),
    once: bool = typer.Option(False, "--once", help="Scan, compare with the store, post, exit (for cron and timers)."),
    remind: Optional[str] = typer.Option(None, "--remind", metavar="DURATION",
                                         help="Post ongoing findings again after this long (e.g. 24h)."),
    resolve_after: str = typer.Option("0s", "--resolve-after", metavar="DURATION",
                                      help="Call a finding resolved only after it was gone this long (flapping guard)."),
    debounce: str = typer.Option("500ms", "--debounce", metavar="DURATION",
                                 help="Wait for a burst of events on a container to settle before re-diagnosing."),
    min_severity: options.Severity = typer.Option(options.Severity.warning, "--min-severity",
                                             help="Track and post findings at or above this."),
    metrics_addr: Optional[str] = typer.Option(None, "--metrics-addr", metavar="HOST:PORT",
                                               help="Serve Prometheus /metrics and /healthz here."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", help="text or json (one object a line)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    log_lines: int = options.LogLines,
    use_exec: bool = options.Exec,
    retry_max: str = typer.Option("5m", "--retry-max", metavar="DURATION",
                                  help="Longest wait between delivery retries (backoff doubles up to it)."),
    drain_timeout: str = typer.Option("30s", "--drain-timeout", metavar="DURATION",
                                      help="With --once: how long to keep retrying deliveries before exiting."),
    rules: Optional[List[str]] = options.Rules,
    config: Optional[str] = options.Config,
    label_ignores: bool = options.LabelIgnores,
):
    """Watch Docker: diagnose at start, every --interval and on container events; post new and
    resolved findings to webhooks; keep findings and their history in a SQLite store."""
    from doctor import logsetup, sinks as sink_registry, watch as daemon
    from doctor.metrics import Metrics

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"invalid --log-level {log_level!r}", "use debug, info, warning or error")
    settings = daemon.Settings(
        patterns=list(containers or []),
        interval=parse_duration(interval, "--interval"),
        debounce=parse_duration(debounce, "--debounce"),
        remind=parse_duration(remind, "--remind") if remind else None,
        resolve_after=parse_duration(resolve_after, "--resolve-after"),
        min_severity=min_severity.value,
        log_lines=log_lines,
        use_exec=use_exec,
        retry_max=parse_duration(retry_max, "--retry-max"),
        drain_timeout=parse_duration(drain_timeout, "--drain-timeout"),
    )
    if settings.interval < 1:
        raise UsageError("--interval must be at least 1s")
    logsetup.setup(log_format.value, level)
    logsetup.REDACT.add_secret(os.environ.get("DOCKDOC_WEBHOOK_SECRET"))
    sinks = sink_registry.parse_all(post)  # a bad URL fails here, before anything runs
    from doctor import diagnose

    loaded = diagnose.load(rules, config, label_ignores)  # and so does a broken pack or config
    store = _open_store(state)  # and an unusable state path
    metrics = None
    try:
        if metrics_addr and not once:
            metrics = Metrics()
            metrics.stall_after = max(120.0, 3 * settings.interval)
            metrics.serve(metrics_addr)
            logging.getLogger("dockdoc.watch").info("serving GET /metrics and /healthz on %s", metrics_addr)
    except BaseException:
        store.close()
        raise
    code = daemon.run_watch(settings, store, sinks, loaded, metrics, once=once)
    raise typer.Exit(code)


def history(
    state: Optional[str] = options.State,
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=100000, help="How many events (newest last)."),
    open_only: bool = typer.Option(False, "--open", help="Show the findings open now instead of events."),
    outbox: bool = typer.Option(False, "--outbox", help="Show deliveries still waiting (and rejected ones)."),
    fmt: HistoryFormat = typer.Option(HistoryFormat.table, "--format", "-f", help="table or json."),
):
    """Show the finding history the watch (or `scan --post`) recorded: new, resolved, reminders."""
    from tabulate import tabulate

    from doctor.store import StateError, default_path

    path = state or default_path()
    if not os.path.isfile(path):
        raise StateError(f"no state store at {path}",
                         "`dockdoc watch` or `dockdoc scan --post` creates it; or give --state PATH")
    store = _open_store(path)
    try:
        if open_only:
            rows = store.open_findings()
            if fmt == HistoryFormat.json:
                typer.echo(json.dumps(rows, indent=2, default=str))
                return
            table = [[_when(r["first_seen"]), _when(r["last_seen"]), r["state"], r["severity"], r["cause"],
                      _subject(r["subject"], r["item"]), r["fingerprint"][:12]] for r in rows]
            headers = ["SINCE", "LAST SEEN", "STATE", "SEVERITY", "CAUSE", "SUBJECT", "FINGERPRINT"]
        elif outbox:
            rows = store.outbox(("pending", "rejected"), limit)
            if fmt == HistoryFormat.json:
                typer.echo(json.dumps(rows, indent=2, default=str))
                return
            table = [[_when(r["created_at"]), r["status"], r["event"], r["sink_label"], r["attempts"],
                      _when(r["next_attempt_at"]) if r["status"] == "pending" else "-", (r["last_error"] or "")[:60]]
                     for r in rows]
            headers = ["QUEUED", "STATUS", "EVENT", "SINK", "ATTEMPTS", "NEXT TRY", "LAST ERROR"]
        else:
            rows = store.history(limit)
            if fmt == HistoryFormat.json:
                typer.echo(json.dumps(rows, indent=2, default=str))
                return
            table = [[_when(r["at"]), r["event"], r["severity"], r["cause"], _subject(r["subject"], r["item"]),
                      r["fingerprint"][:12], (r["message"] or "")[:80]] for r in rows]
            headers = ["WHEN", "EVENT", "SEVERITY", "CAUSE", "SUBJECT", "FINGERPRINT", "MESSAGE"]
        if not table:
            typer.echo("nothing recorded yet" if not (open_only or outbox) else "none")
            return
        typer.echo(tabulate(table, headers=headers))
    finally:
        store.close()


def _when(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _subject(subject: str, item: str) -> str:
    return subject.split(":", 1)[-1] + (f" {item}" if item else "")


def register(app: typer.Typer) -> None:
    """Add `watch` and `history` to the dockdoc Typer app."""
    app.command("watch")(watch)
    app.command("history")(history)


def check_post(urls: list[str], state_path: str | None) -> None:
    """For `scan --post`, before scanning: a bad URL or an unusable state path fails first (one line,
    exit 2), not after the report was printed."""
    from doctor import sinks as sink_registry

    sink_registry.parse_all(urls)
    _open_store(state_path).close()


def post_report(report: dict, urls: list[str], state_path: str | None, *, unknown=(),
                min_severity: str = "info", complete: bool = False, drain_timeout: float = 30.0) -> int:
    """For `dockdoc scan --post URL`: record the report's findings in the store (new / ongoing /
    resolved), post the new and resolved ones, and return how many deliveries still wait in the
    outbox (0 when everything was delivered; the next run retries the rest).

    `report` is the document of doctor.report.build. Pass `complete=True` when the scan covered
    every container (no names, no --running): only then can a finding of a container that no longer
    exists be resolved. `unknown` is the engine's (container id, rule) pairs, so that an undecidable
    rule does not count as fixed; `min_severity` the scan's --min-severity.
    """
    from doctor import logsetup, sinks as sink_registry, watch as daemon

    if not any(getattr(h, "_dockdoc", False) for h in logging.getLogger().handlers):
        logsetup.setup("text", "WARNING")
    logsetup.REDACT.add_secret(os.environ.get("DOCKDOC_WEBHOOK_SECRET"))
    sinks = sink_registry.parse_all(urls)
    store = _open_store(state_path)
    try:
        settings = daemon.Settings(min_severity=min_severity, drain_timeout=drain_timeout)
        remaining = daemon.post_document(report, sinks, store, settings, unknown=unknown, complete=complete)
    finally:
        store.close()
    if remaining:
        print(f"dockdoc: {remaining} deliveries could not be made yet; they wait in the outbox "
              f"({store.path}) for the next run", file=sys.stderr)
    return remaining
