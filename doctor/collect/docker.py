"""Container facts from the Docker Engine API: one list call, then one inspect and one log tail
per container, in parallel. Read-only: nothing here starts, stops or changes a container.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import docker.errors
import requests.exceptions

from doctor import facts
from doctor.collect import accesslog, joins
from doctor.collect import host as host_facts
from doctor.collect import netlink, sockets
from doctor.collect.connection import describe_failure
from doctor.errors import ContainerNotFound

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_NUMBER = "com.docker.compose.container-number"
# Phrases in State.Error that mean "the host port was taken".
PORT_TAKEN = ("port is already allocated", "address already in use")
MAX_LINE = 4096  # characters kept of each log line
# The unix-socket transport docker-py uses for local daemons.
LOCAL_SCHEMES = ("http+docker://localhost", "http+docker://localunixsocket")


class Options:
    """What to collect. Defaults are what `dockdoc scan` does with no flags."""

    def __init__(self, log_lines: int = 200, use_exec: bool = False, workers: int = 4):
        self.log_lines = log_lines
        self.use_exec = use_exec
        self.workers = workers


def select(summaries: list[dict], patterns: list[str]) -> list[dict]:
    """Containers whose name, id prefix or compose service matches one of the patterns (globs allowed).

    A pattern that matches nothing is an error: a typo should not look like a clean bill of health.
    """
    if not patterns:
        return summaries
    chosen, seen = [], set()
    for pattern in patterns:
        matched = [s for s in summaries if _matches(s, pattern)]
        if not matched:
            raise ContainerNotFound(
                f"no container matches {pattern!r}",
                "see `docker ps -a` for names; globs such as 'web*' are allowed",
            )
        for summary in matched:
            if summary["Id"] not in seen:
                seen.add(summary["Id"])
                chosen.append(summary)
    return chosen


def _matches(summary: dict, pattern: str) -> bool:
    names = [n.lstrip("/") for n in summary.get("Names") or []]
    labels = summary.get("Labels") or {}
    service = labels.get(COMPOSE_SERVICE)
    if service:
        names.append(service)
        names.append(f"{labels.get(COMPOSE_PROJECT)}/{service}")
    if len(pattern) >= 3 and all(c in "0123456789abcdef" for c in pattern):
        if summary["Id"].startswith(pattern):
            return True
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


def collect(api, patterns: list[str] | None = None, running_only: bool = False,
            options: Options | None = None, keep=None) -> dict:
    """A snapshot of the selected containers (see doctor.facts for its shape). `keep`, a predicate
    over list-call summaries, replaces `patterns` for callers (watch) that choose by other means:
    still one list call, and the unchosen containers still serve the cross-container joins."""
    options = options or Options()
    try:
        version = api.version()
        summaries = api.containers(all=not running_only)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise describe_failure(exc) from exc
    everyone = summaries
    summaries = select(summaries, patterns or []) if keep is None else [s for s in summaries if keep(s)]
    now = _dt.datetime.now(_dt.timezone.utc)
    local = api.base_url.startswith(LOCAL_SCHEMES)

    def one(summary: dict) -> dict | None:
        return _collect_one(api, summary["Id"], options, now)

    try:
        with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
            containers = [c for c in pool.map(one, summaries) if c is not None]
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise describe_failure(exc) from exc  # the daemon went away mid-scan

    containers.sort(key=lambda c: c["name"])
    # Cross-container facts: whom a failed connection was meant for. Containers that were not
    # selected are still known from the list call, so names resolve against all of `docker ps`.
    chosen = {c["id"] for c in containers}
    joins.join(containers, peers=[joins.peer_from_summary(s) for s in everyone if s["Id"] not in chosen])
    host = {
        "daemon": {
            "url": api.base_url if not local else "unix socket",
            "local": local,
            "version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "os": version.get("Os"),
            "arch": version.get("Arch"),
            "platform": (version.get("Platform") or {}).get("Name"),
        },
        "port_owners": _port_owners(containers, local),
    }
    return facts.new_snapshot(host, containers)


def _collect_one(api, container_id: str, options: Options, now: _dt.datetime) -> dict | None:
    try:
        inspect = api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None  # removed between the list and the inspect: nothing left to diagnose
    logs, logs_source = _log_tail(api, inspect, options.log_lines)
    listeners, listeners_source = _listeners(api, inspect, options.use_exec)
    return container_facts(inspect, logs, logs_source, listeners, listeners_source, now)


def _log_tail(api, inspect: dict, lines: int) -> tuple[dict | None, str]:
    """The last `lines` log lines with timestamps, or None and why not.

    docker-py's logs() inspects the container again to learn whether it has a TTY; we already
    know that from our own inspect, so we issue the same request and decode it the same way.
    """
    if lines <= 0:
        return None, "unavailable: log reading disabled (--log-lines 0)"
    params = {"stdout": 1, "stderr": 1, "timestamps": 1, "tail": lines, "follow": 0}
    try:
        response = api._get(api._url("/containers/{0}/logs", inspect["Id"]), params=params)
        raw = api._get_result_tty(False, response, inspect["Config"].get("Tty", False))
    except docker.errors.APIError as exc:
        reason = (exc.explanation or str(exc)).strip()
        return None, f"unavailable: {reason}"
    except requests.exceptions.RequestException as exc:
        return None, f"unavailable: {type(exc).__name__}"
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    times, out = [], []
    for line in text.splitlines():
        stamp, sep, rest = line.partition(" ")
        if not (sep and stamp[:4].isdigit() and "T" in stamp):
            stamp, rest = None, line  # a line without a timestamp (should not happen): keep it
        times.append(stamp)
        # One runaway line (a minified bundle, a base64 blob) must not cost megabytes per rule.
        out.append(rest.rstrip("\r")[:MAX_LINE])
    return {"lines": out, "times": times, "truncated": len(out) >= lines}, "docker logs"


def _listeners(api, inspect: dict, use_exec: bool) -> tuple[list | None, str]:
    """Listening sockets in the container's network namespace, or None and why not."""
    state = inspect.get("State") or {}
    pid = state.get("Pid") or 0
    if not state.get("Running") or not pid:
        return None, "unavailable: container is not running"
    mode = (inspect.get("HostConfig") or {}).get("NetworkMode") or ""
    if mode == "host":
        return None, "unavailable: container uses the host network"
    reason = _proc_unusable(pid, inspect["Id"])
    if reason is None:
        try:
            found, source = _read_sockets(pid)
            return [l for l in found if l["address"] != facts.DOCKER_DNS], source
        except OSError as exc:
            reason = f"cannot read /proc/{pid}/net/tcp: {exc.strerror}"
    if use_exec:
        return _listeners_by_exec(api, inspect["Id"], reason)
    return None, f"unavailable: {reason}; --exec would read them inside the container"


_netlink_usable = [True]  # until the kernel says no (EPERM without CAP_SYS_ADMIN): then /proc


def _read_sockets(pid: int) -> tuple[list[dict], str]:
    """sock_diag inside the container's network namespace when allowed (microseconds), else
    /proc/<pid>/net/tcp{,6} (milliseconds: it walks the host's whole TCP table)."""
    if _netlink_usable[0]:
        try:
            return netlink.listeners_in_netns(pid), f"sock_diag in the network namespace of pid {pid}"
        except PermissionError:
            _netlink_usable[0] = False
        except OSError:
            pass  # this container only (it may have just exited): /proc says why
    return sockets.read_listeners(pid), f"/proc/{pid}/net/tcp"


def _proc_unusable(pid: int, container_id: str) -> str | None:
    """Why the host's /proc cannot show this container's sockets, or None when it can.

    The pid in State.Pid is the daemon's view. It only names the container's process here when
    the daemon shares this machine's PID space; the cgroup check proves it (Docker Desktop,
    remote daemons and PID namespaces all fail it).
    """
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as handle:
            cgroup = handle.read()
    except FileNotFoundError:
        return f"pid {pid} is not visible here (remote daemon, Docker Desktop or another PID namespace)"
    except OSError as exc:
        return f"cannot read /proc/{pid}: {exc.strerror}"
    if container_id not in cgroup and container_id[:12] not in cgroup:
        return f"pid {pid} here is not this container's process (the daemon runs elsewhere)"
    return None


def _listeners_by_exec(api, container_id: str, reason: str) -> tuple[list | None, str]:
    """The opt-in fallback: run `cat` inside the container. Announced, because it runs a process."""
    print(f"dockdoc: --exec: running 'cat /proc/net/tcp /proc/net/tcp6' in {container_id[:12]} ({reason})",
          file=sys.stderr)
    found = []
    try:
        for name, ipv6 in (("tcp", False), ("tcp6", True)):
            exec_id = api.exec_create(container_id, ["cat", f"/proc/net/{name}"], stdout=True, stderr=False)
            output = api.exec_start(exec_id)
            code = api.exec_inspect(exec_id).get("ExitCode")
            if code not in (0, None):
                if ipv6:
                    break
                return None, "unavailable: `cat /proc/net/tcp` failed inside the container"
            found.extend(sockets.parse_proc_net_tcp(output.decode("ascii", "replace"), ipv6))
    except docker.errors.APIError as exc:
        return None, f"unavailable: docker exec failed: {(exc.explanation or str(exc)).strip()}"
    found = [l for l in sockets.dedupe(found) if l["address"] != facts.DOCKER_DNS]
    return found, "docker exec cat /proc/net/tcp"


def container_facts(inspect: dict, logs: dict | None, logs_source: str,
                    listeners: list | None, listeners_source: str, now: _dt.datetime) -> dict:
    """Turn one inspect result (plus logs and sockets) into the container's facts."""
    config = inspect.get("Config") or {}
    host_config = inspect.get("HostConfig") or {}
    state = inspect.get("State") or {}
    network = inspect.get("NetworkSettings") or {}
    labels = config.get("Labels") or {}
    name = (inspect.get("Name") or "").lstrip("/")
    compose = None
    if labels.get(COMPOSE_PROJECT):
        compose = {
            "project": labels.get(COMPOSE_PROJECT),
            "service": labels.get(COMPOSE_SERVICE),
            "number": labels.get(COMPOSE_NUMBER),
        }
    unknown = {}
    if listeners is None:
        # The facts derived from the sockets are unknown with them.
        for key in ("listeners", "listening_ports", "reachable_ports", "reachable_listeners"):
            unknown[key] = listeners_source
    if logs is None:
        unknown["logs"] = logs_source
        unknown["http"] = logs_source  # the access-log summary is read from the logs

    started = facts.parse_time(state.get("StartedAt"))
    finished = facts.parse_time(state.get("FinishedAt"))
    running = bool(state.get("Running"))
    uptime = (now - started).total_seconds() if running and started else None
    ran = None
    if not running and started and finished:
        # A process that exits at once can finish "before" Docker records its start: clamp at 0.
        ran = max(0.0, (finished - started).total_seconds())
    exit_code = state.get("ExitCode")
    restart_policy = host_config.get("RestartPolicy") or {}
    health = state.get("Health")
    healthcheck = config.get("Healthcheck") or {}

    return {
        "id": inspect["Id"],
        "short_id": inspect["Id"][:12],
        "name": name,
        "display_name": f"{name} ({compose['project']}/{compose['service']})" if compose else name,
        "image": config.get("Image") or inspect.get("Image"),
        "image_id": inspect.get("Image"),
        "created": inspect.get("Created"),
        "labels": labels,
        # Values can hold secrets: only the names ever leave this function.
        "env_keys": sorted({item.split("=", 1)[0] for item in config.get("Env") or []}),
        "command": config.get("Cmd") or [],
        "entrypoint": config.get("Entrypoint") or [],
        "user": config.get("User") or "",
        "compose": compose,
        "state": {
            "status": state.get("Status"),
            "running": running,
            "restarting": bool(state.get("Restarting")),
            "paused": bool(state.get("Paused")),
            "oom_killed": bool(state.get("OOMKilled")),
            "dead": bool(state.get("Dead")),
            "pid": state.get("Pid") or None,
            "exit_code": exit_code,
            "exit_meaning": facts.exit_meaning(exit_code),
            "error": state.get("Error") or "",
            "started_at": state.get("StartedAt") if started else None,
            "finished_at": state.get("FinishedAt") if finished else None,
            "uptime_seconds": round(uptime, 1) if uptime is not None else None,
            "ran_seconds": round(ran, 1) if ran is not None else None,
        },
        "restart": {
            "count": inspect.get("RestartCount", 0),
            "policy": restart_policy.get("Name") or "no",
            "max_retry": restart_policy.get("MaximumRetryCount", 0),
        },
        "health": _health(health, healthcheck),
        "memory_limit": host_config.get("Memory") or 0,
        "memory_limit_mib": round((host_config.get("Memory") or 0) / 1048576, 1),
        "network_mode": host_config.get("NetworkMode") or "default",
        "networks": [
            {"name": net_name, "ip": net.get("IPAddress") or None, "aliases": net.get("Aliases") or []}
            for net_name, net in sorted((network.get("Networks") or {}).items())
        ],
        "read_only_rootfs": bool(host_config.get("ReadonlyRootfs")),
        "listeners": listeners,
        "listeners_source": listeners_source,
        "listening_ports": sorted({l["port"] for l in listeners}) if listeners is not None else None,
        "reachable_ports": (
            sorted({l["port"] for l in listeners if not facts.is_loopback(l["address"])})
            if listeners is not None else None
        ),
        "ports": _ports(config, host_config, network, listeners, state.get("Error") or ""),
        "logs": logs,
        "logs_source": logs_source,
        "http": accesslog.summarize(logs["lines"]) if logs is not None else None,
        "unknown": unknown,
    }


def _health(health: dict | None, healthcheck: dict) -> dict | None:
    if not health:
        return None
    log = [
        {"exit_code": entry.get("ExitCode"), "output": (entry.get("Output") or "").strip()[:2000],
         "start": entry.get("Start")}
        for entry in (health.get("Log") or [])
    ]
    return {
        "status": health.get("Status"),
        "failing_streak": health.get("FailingStreak", 0),
        "log": log,
        "last_output": log[-1]["output"] if log else None,
        "test": healthcheck.get("Test") or [],
    }


def _split_port(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return int(port), proto or "tcp"


def _bindings(entries) -> list[dict]:
    return [
        {"host_ip": b.get("HostIp") or "0.0.0.0", "host_port": int(b["HostPort"]) if b.get("HostPort") else None}
        for b in entries or []
    ]


def _ports(config: dict, host_config: dict, network: dict, listeners: list | None, error: str) -> list[dict]:
    """One joined entry per container port: exposed? published where? who listens on it?
    Did its host port fail to bind at start (`host_conflict`)?"""
    conflict = _conflicting_host_port(error)
    exposed = {_split_port(k) for k in (config.get("ExposedPorts") or {})}
    published = {_split_port(k): _bindings(v) for k, v in (network.get("Ports") or {}).items()}
    requested = {_split_port(k): _bindings(v) for k, v in (host_config.get("PortBindings") or {}).items()}
    keys = set(exposed) | set(published) | set(requested)
    if listeners is not None:
        keys |= {(l["port"], l["proto"]) for l in listeners}
    ports = []
    for port, proto in sorted(keys):
        on_port = None
        if listeners is not None:
            on_port = [l for l in listeners if l["port"] == port and l["proto"] == proto]
        ports.append({
            "port": port,
            "proto": proto,
            "exposed": (port, proto) in exposed,
            "published": published.get((port, proto)) or [],
            "requested": requested.get((port, proto)) or [],
            "listeners": on_port,
            # Listeners a published port can reach: anything but loopback.
            "reachable_listeners": (
                [l for l in on_port if not facts.is_loopback(l["address"])] if on_port is not None else None
            ),
            "host_conflict": (
                {"host_ip": conflict[0], "host_port": conflict[1], "holder": None}
                if conflict and any(b["host_port"] == conflict[1] for b in requested.get((port, proto)) or [])
                else None
            ),
        })
    return ports


# "Bind for 0.0.0.0:8080 failed: port is already allocated",
# "listen tcp4 0.0.0.0:8001: bind: address already in use"
_CONFLICT = re.compile(r"(?:Bind for |listen tcp[46]? )\[?([0-9a-fA-F.:]*?)\]?:(\d+)")


def _conflicting_host_port(error: str) -> tuple[str, int] | None:
    if not any(phrase in error for phrase in PORT_TAKEN):
        return None
    found = _CONFLICT.search(error)
    return (found.group(1) or "0.0.0.0", int(found.group(2))) if found else None


def _port_owners(containers: list[dict], local: bool) -> dict:
    """For host ports a container could not bind: which container or host process holds it.
    The holder is joined into the port's `host_conflict`, where rules look for it."""
    conflicts = [p["host_conflict"] for c in containers for p in c["ports"] if p.get("host_conflict")]
    if not conflicts:
        return {}
    owners = {}
    # Another container publishing the port is the common case, and needs no host access.
    for container in containers:
        for port in container["ports"]:
            for binding in port["published"]:
                for conflict in conflicts:
                    if binding["host_port"] == conflict["host_port"] and host_facts.overlaps(
                            conflict["host_ip"], binding["host_ip"]):
                        key = f"{conflict['host_ip']}:{conflict['host_port']}/tcp"
                        owners[key] = {"kind": "container", "name": container["name"],
                                       "id": container["short_id"]}
    if local:  # psutil sees this machine's processes only
        wanted = {(c["host_ip"], c["host_port"]) for c in conflicts}
        for key, owner in host_facts.port_owners(wanted).items():
            owners.setdefault(key, owner)
    for conflict in conflicts:
        conflict["holder"] = owners.get(f"{conflict['host_ip']}:{conflict['host_port']}/tcp")
    return owners
