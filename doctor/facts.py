"""The fact model: plain JSON-serialisable dicts, and the snapshot file that carries them.

Collectors produce facts, the engine reads them; neither knows about the other. A snapshot is

    {"schema_version": 1, "kind": "dockdoc-snapshot", "collected_at": ISO-8601,
     "dockdoc_version": str, "host": HOST, "containers": [CONTAINER, ...]}

HOST:
    daemon: {"url", "local": bool, "version", "api_version", "os", "platform"}
    port_owners: {"<host_ip>:<host_port>/<proto>": {"kind": "process"|"container", "name", "pid"?}}

CONTAINER (the keys rules may use; see docs/facts.md for each one):
    id, short_id, name, image, image_id, created, labels, env_keys (names only, never values),
    command, entrypoint, user, compose: {project, service, number} | null, display_name,
    state: {status, running, restarting, paused, oom_killed, dead, pid, exit_code, exit_meaning,
            error, started_at, finished_at, uptime_seconds, ran_seconds}
    restart: {count, policy, max_retry}
    health: {status, failing_streak, log: [{exit_code, output, start}], test} | null
    memory_limit, network_mode, networks: [{name, ip, aliases}], read_only_rootfs,
    listeners: [{address, port, proto}] | null, listeners_source,
    listening_ports: [int] | null   (ports with a listener on any address)
    reachable_ports: [int] | null   (ports with a listener on a non-loopback address)
    memory_limit (bytes, 0 = none), memory_limit_mib
    ports: [PORT], one per container port that is exposed, published, requested or listened on:
        {port, proto, exposed, published: [{host_ip, host_port}], requested: [{host_ip, host_port}],
         listeners: [{address, port, proto}] | null, reachable_listeners: [...] | null,
         host_conflict: {host_ip, host_port, holder: {kind, name, pid?} | null} | null}
    logs: {lines: [str], times: [str], truncated: bool} | null, logs_source
    unknown: {fact_name: reason}   facts that could not be collected (listeners, logs, ...)

A fact that could not be collected is null and named in `unknown`, so that rules which need it
answer *unknown* instead of a false "fine".
"""

from __future__ import annotations

import datetime as _dt
import json
import signal
from pathlib import Path
from typing import Any

from doctor import __version__
from doctor.errors import SnapshotError

SCHEMA_VERSION = 1
SNAPSHOT_KIND = "dockdoc-snapshot"
# Docker's embedded DNS server listens on this address (random ports) in every container on a
# user-defined network: it is Docker's, not the app's, so it is not a listener of the app.
DOCKER_DNS = "127.0.0.11"


def is_loopback(address: str) -> bool:
    """All of 127.0.0.0/8 and ::1 (an app bound to 127.0.0.2 is as unreachable as one on .1)."""
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

# Exit codes with a conventional meaning of their own; >= 128 is 128 + a signal number.
_EXIT_MEANINGS = {
    0: "success",
    1: "application error: the program reported a failure, see its last log lines",
    2: "misuse of a command: bad arguments or options",
    125: "the Docker daemon failed to run the container",
    126: "the command exists but cannot be executed: permissions or format",
    127: "the command was not found in the image",
    130: "interrupted with SIGINT (Ctrl-C)",
    137: "killed with SIGKILL: out of memory, `docker kill`, or a `docker stop` that timed out",
    143: "terminated with SIGTERM, usually by `docker stop`",
}


def exit_meaning(code: int | None) -> str | None:
    """What an exit code usually means, in words a user can act on."""
    if code is None:
        return None
    if code in _EXIT_MEANINGS:
        return _EXIT_MEANINGS[code]
    if code > 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            return f"killed by signal {code - 128}"
        extra = {"SIGSEGV": ", a segmentation fault: a crash in native code", "SIGABRT": ", an abort"}
        return f"killed by {name}{extra.get(name, '')}"
    return "application-specific error code"


def parse_time(value: str | None) -> _dt.datetime | None:
    """Docker's RFC 3339 timestamps with nanoseconds; the zero time means "never"."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        tz = ""
        for sign in ("+", "-"):
            if sign in frac:
                frac, tz = frac.split(sign, 1)
                tz = sign + tz
        text = f"{head}.{frac[:6]}{tz}"
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_snapshot(host: dict, containers: list[dict]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": SNAPSHOT_KIND,
        "collected_at": now_iso(),
        "dockdoc_version": __version__,
        "host": host,
        "containers": containers,
    }


def write_snapshot(snapshot: dict, path: str) -> None:
    data = json.dumps(snapshot, indent=2, sort_keys=True) + "\n"
    try:
        if path == "-":
            import sys

            sys.stdout.write(data)
        else:
            Path(path).write_text(data, encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"cannot write snapshot {path}: {exc.strerror}") from exc


def read_snapshot(path: str) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise SnapshotError(f"{path} is not a dockdoc snapshot (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return validate_snapshot(data, path)


def validate_snapshot(data: Any, path: str = "snapshot") -> dict:
    """Check the envelope and the keys the engine relies on; say exactly what is wrong."""
    if not isinstance(data, dict) or data.get("kind") != SNAPSHOT_KIND:
        raise SnapshotError(f"{path} is not a dockdoc snapshot (no \"kind\": \"{SNAPSHOT_KIND}\")")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise SnapshotError(f"{path}: schema_version is missing or not an integer")
    if version > SCHEMA_VERSION:
        raise SnapshotError(
            f"{path} has schema version {version}, newer than this dockdoc understands ({SCHEMA_VERSION})",
            "upgrade dockdoc to read it",
        )
    if version < 1:
        raise SnapshotError(f"{path}: unknown schema version {version}")
    if not isinstance(data.get("host"), dict):
        raise SnapshotError(f"{path}: \"host\" must be an object")
    containers = data.get("containers")
    if not isinstance(containers, list):
        raise SnapshotError(f"{path}: \"containers\" must be a list")
    for index, container in enumerate(containers):
        if not isinstance(container, dict):
            raise SnapshotError(f"{path}: containers[{index}] must be an object")
        where = f"{path}: containers[{index}]"
        for key, kind in (("id", str), ("name", str), ("state", dict), ("ports", list)):
            if not isinstance(container.get(key), kind):
                raise SnapshotError(f"{where}.{key} is missing or not {_KIND_NAMES[kind]}")
        # The parts reports and rules walk into: present with the right shape, or absent/null.
        for key, kind in (("restart", dict), ("health", dict), ("logs", dict), ("labels", dict),
                          ("unknown", dict), ("listeners", list), ("networks", list), ("http", dict)):
            if container.get(key) is not None and not isinstance(container[key], kind):
                raise SnapshotError(f"{where}.{key} is not {_KIND_NAMES[kind]}")
        lines = (container.get("logs") or {}).get("lines")
        if lines is not None and not (isinstance(lines, list) and all(isinstance(l, str) for l in lines)):
            raise SnapshotError(f"{where}.logs.lines is not a list of strings")
        for number, port in enumerate(container["ports"]):
            if not (isinstance(port, dict) and isinstance(port.get("port"), int)
                    and all(isinstance(port.get(k) or [], list) for k in ("published", "requested"))):
                raise SnapshotError(f"{where}.ports[{number}] is not a port entry (port number, published, requested)")
        container.setdefault("unknown", {})
    return data


_KIND_NAMES = {str: "a string", dict: "an object", list: "a list"}
