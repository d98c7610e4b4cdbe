"""Building facts for pure tests: containers shaped like doctor.collect.docker.container_facts()
produces them, snapshots around them, and rule packs from YAML text. No Docker needed.

    snap = snapshot(container("web", listeners=["127.0.0.1:5000"], ports=[port(5000, published="0.0.0.0:8080")]))
"""

from __future__ import annotations

import copy
import hashlib
import json
import textwrap
from pathlib import Path

from doctor import facts
from doctor.engine import packs

STARTED = "2026-11-27T08:00:00.000000000Z"
FINISHED = "2026-11-27T08:00:01.500000000Z"

HOST = {
    "daemon": {"url": "unix:///var/run/docker.sock", "local": True, "version": "27.3.1",
               "api_version": "1.47", "os": "linux", "platform": "Docker Engine - Community"},
    "port_owners": {},
}


def _id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def listener(spec: str) -> dict:
    """'127.0.0.1:5000' or '[::1]:5000' -> a listener as doctor.collect.sockets reports it."""
    host, _, port = spec.rpartition(":")
    address = host.strip("[]")
    return {"address": address, "port": int(port), "proto": "tcp", "endpoint": spec}


def _binding(spec: str) -> dict:
    host_ip, _, host_port = spec.rpartition(":")
    return {"host_ip": host_ip.strip("[]"), "host_port": int(host_port)}


def port(number: int, *, published=(), requested=None, exposed: bool = True, proto: str = "tcp",
         host_conflict: dict | None = None) -> dict:
    """A port entry; `published` holds 'host_ip:host_port' strings. Listeners are filled in by
    container() from its own listeners, as the collector joins them."""
    if isinstance(published, str):
        published = [published]
    bindings = [_binding(p) for p in published]
    if requested is None:
        requested_bindings = list(bindings)
    else:
        requested_bindings = [_binding(p) for p in ([requested] if isinstance(requested, str) else requested)]
    return {"port": number, "proto": proto, "exposed": exposed, "published": bindings,
            "requested": requested_bindings, "host_conflict": host_conflict}


def running_state(uptime: float = 3600.0) -> dict:
    return {"status": "running", "running": True, "restarting": False, "paused": False, "oom_killed": False,
            "dead": False, "pid": 4242, "exit_code": 0, "exit_meaning": facts.exit_meaning(0), "error": "",
            "started_at": STARTED, "finished_at": None, "uptime_seconds": uptime, "ran_seconds": None}


def exited_state(code: int, *, oom_killed: bool = False, ran_seconds: float = 1.5, error: str = "") -> dict:
    return {"status": "exited", "running": False, "restarting": False, "paused": False, "oom_killed": oom_killed,
            "dead": False, "pid": None, "exit_code": code, "exit_meaning": facts.exit_meaning(code),
            "error": error, "started_at": STARTED, "finished_at": FINISHED, "uptime_seconds": None,
            "ran_seconds": ran_seconds}


def container(name: str = "web", *, listeners=("0.0.0.0:80",), ports=(), state: dict | None = None,
              logs=(), restart: dict | None = None, health: dict | None = None, **extra) -> dict:
    """A container's facts. `listeners=None` means the sockets could not be read (unknown);
    `logs=None` means the logs could not be read."""
    state = state or running_state()
    unknown = {}
    if listeners is None:
        socket_list = None
        listeners_source = "unavailable: the container is not running"
        for key in ("listeners", "listening_ports", "reachable_ports", "reachable_listeners"):
            unknown[key] = listeners_source
    else:
        socket_list = [listener(s) for s in listeners]
        listeners_source = "/proc/4242/net/tcp"
    if logs is None:
        log_facts, logs_source = None, "unavailable: the log driver 'none' cannot be read"
        unknown["logs"] = logs_source
    else:
        lines = list(logs)
        log_facts = {"lines": lines, "times": [STARTED] * len(lines), "truncated": False}
        logs_source = "docker logs"
    port_facts = []
    for entry in ports:
        entry = copy.deepcopy(entry)
        if socket_list is None:
            entry.setdefault("listeners", None)
            entry.setdefault("reachable_listeners", None)
        else:
            on_port = [l for l in socket_list if l["port"] == entry["port"] and l["proto"] == entry["proto"]]
            entry.setdefault("listeners", on_port)
            entry.setdefault("reachable_listeners", [l for l in on_port if not facts.is_loopback(l["address"])])
        port_facts.append(entry)
    facts_ = {
        "id": _id(name),
        "short_id": _id(name)[:12],
        "name": name,
        "display_name": name,
        "image": "example/app:1",
        "image_id": "sha256:" + _id("image-" + name),
        "created": STARTED,
        "labels": {},
        "env_keys": ["PATH"],
        "command": ["app"],
        "entrypoint": [],
        "user": "",
        "compose": None,
        "state": state,
        "restart": restart or {"count": 0, "policy": "no", "max_retry": 0},
        "health": health,
        "memory_limit": 0,
        "memory_limit_mib": 0.0,
        "network_mode": "bridge",
        "networks": [{"name": "bridge", "ip": "172.17.0.2", "aliases": []}],
        "read_only_rootfs": False,
        "listeners": socket_list,
        "listeners_source": listeners_source,
        "listening_ports": sorted({l["port"] for l in socket_list}) if socket_list is not None else None,
        "reachable_ports": (sorted({l["port"] for l in socket_list if not facts.is_loopback(l["address"])})
                            if socket_list is not None else None),
        "ports": port_facts,
        "logs": log_facts,
        "logs_source": logs_source,
        "unknown": unknown,
    }
    facts_.update(extra)
    return facts_


def snapshot(*containers: dict, host: dict | None = None) -> dict:
    return facts.new_snapshot(copy.deepcopy(host or HOST), [copy.deepcopy(c) for c in containers])


# ---- the scenarios the report and CLI tests share ------------------------------------------------

def healthy(name: str = "ok") -> dict:
    """Listens on 0.0.0.0:80, published on 0.0.0.0:8080: no built-in rule fires."""
    return container(name, listeners=["0.0.0.0:80"], ports=[port(80, published="0.0.0.0:8080")])


def loopback(name: str = "web") -> dict:
    """The app listens on 127.0.0.1:5000 only, published on 0.0.0.0:8080: dockdoc/bind-loopback (error)."""
    return container(name, listeners=["127.0.0.1:5000"], ports=[port(5000, published="0.0.0.0:8080")])


def private(name: str = "db") -> dict:
    """Published on 127.0.0.1 only: dockdoc/published-loopback-only (info)."""
    return container(name, listeners=["0.0.0.0:5432"], ports=[port(5432, published="127.0.0.1:5432")])


def killed(name: str = "job") -> dict:
    """Exited 137 without an OOM kill: dockdoc/killed (warning). Its sockets are unknown."""
    return container(name, listeners=None, state=exited_state(137), logs=["working..."])


def mixed_snapshot() -> dict:
    return snapshot(healthy(), loopback(), private(), killed())


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


# ---- rule packs from text --------------------------------------------------------------------------

def pack_text(rules_yaml: str, name: str = "acme", header: str = "") -> str:
    """A pack document around `rules_yaml` (the items of `rules:`, written at column 0)."""
    body = textwrap.indent(textwrap.dedent(rules_yaml).strip("\n"), "  ")
    return f"pack: {name}\n{textwrap.dedent(header)}rules:\n{body}\n"


def load_rules(text: str, origin: str = "test.yaml") -> list:
    """Compile a pack; fail the test with every error when it does not load."""
    pack, problems = packs.load_text(text, origin)
    assert not problems, "\n".join(problems)
    return pack.rules


def one_rule(when: str, *, each: str | None = None, unless: str | None = None, message: str = "m",
             evidence=(), fix: str | None = "do something", severity: str = "error",
             cause: str = "bind-loopback", rule_id: str = "r"):
    """A single compiled rule; `when`/`unless` are YAML flow or block text for the condition."""
    lines = [f"- id: {rule_id}", f"  cause: {cause}", f"  severity: {severity}", "  title: A title"]
    if each:
        lines.append(f"  each: {each}")
    lines.append("  when:")
    lines.extend("    " + l for l in textwrap.dedent(when).strip("\n").splitlines())
    if unless:
        lines.append("  unless:")
        lines.extend("    " + l for l in textwrap.dedent(unless).strip("\n").splitlines())
    lines.append(f"  message: {json.dumps(message)}")
    if evidence:
        lines.append("  evidence:")
        lines.extend(f"    - {json.dumps(e)}" for e in evidence)
    if fix is not None:
        lines.append(f"  fix: {json.dumps(fix)}")
    (rule,) = load_rules(pack_text("\n".join(lines)))
    return rule
