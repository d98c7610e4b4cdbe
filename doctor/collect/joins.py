"""Facts across containers: who a failing connection in one container's log was meant for.

`join(containers)` reads each container's log tail for the connections it could not make, and
compares them with the other containers of the same snapshot: is anything on its networks called
that, or does anything have that IP? Does it listen on that port, and on which address? Does a name
that did not resolve belong to a container, and do the two share a user-defined network (Docker's
DNS answers there; the default `bridge` network has none)? It adds two keys to every container, in
place (empty lists when its log names nothing):

container.upstreams: [UPSTREAM]   connections that failed, one per (kind, via, host, port), newest last
    UPSTREAM = {
      kind:      "refused" | "timeout" | "reset" | "closed" | "unreachable",
      via:       "proxy" (nginx's own "... upstream" lines) | "client" (an app's or a library's connect error),
      phase:     "connecting" | "reading"  (a proxy timeout while connecting is a network problem;
                                            while reading, a slow or stuck upstream)
      url:       'http://172.19.0.3:9000/' as the proxy logged it, or null
      host:      the name or IP the line names ("172.19.0.3", "db", "127.0.0.1")
      tcp_port:  int | null            (named so that findings are not mistaken for the container's ports)
      address:   "host:port" (or "host") for messages
      loopback:  true when host is 127.0.0.0/8, ::1 or localhost: the container's *own* loopback
      line:      the newest log line naming it;  count: how many lines did
      target:    TARGET | null         the container it reaches (itself for loopback)
      listening_peers: [name]          other running containers on this one's networks that listen on
                                       tcp_port on a non-loopback address: where it probably meant to go
      diagnosis: what the join found, one of
          "loopback"              the container connected to its own loopback
          "target-not-running"    the target exists but is not running now
          "target-not-shared"     the target shares no network with this container
          "target-loopback-only"  the target listens on that port, but on 127.0.0.1/::1 only
          "target-wrong-port"     the target listens, but not on that port (see target.open_ports)
          "target-no-listener"    the target listens on no TCP port at all
          "target-listening"      the target listens there now (the failure was earlier: a restart, a slow start)
          "target-sockets-unknown" the target's sockets could not be read (see its `unknown`)
          "no-such-ip"            no container in the snapshot has that IP (now): a stale IP after the
                                  upstream was recreated, or a host outside Docker
          "no-such-name"          nothing in the snapshot is called that
          "target-found"          the line names no port, so nothing more can be said
    }
    TARGET = {name, display_name, matched_by: "self" | "ip" | "name" | "alias" | "service" | "id",
              running, networks: [names], shared_networks: [names shared with this container],
              endpoints: ["address:port" listening on tcp_port; when the line names no port, every
                          listener on a non-loopback address] | null,
              listens: bool | null            (anything listens on tcp_port),
              listens_reachable: bool | null  (something listens on tcp_port on a non-loopback address),
              open_ports: [int] | null        (the ports it does listen on, on non-loopback addresses;
                                               127.0.0.0/8 is loopback, so Docker's DNS on 127.0.0.11 is left out)}
    (null = its sockets could not be read. The names differ from the container's own `listeners`
    and `reachable_ports` on purpose: the engine treats a condition that reads a field named like
    an unknown fact as unknown.)

container.unresolved: [UNRESOLVED]  names this container could not resolve, newest last
    UNRESOLVED = {
      name, line, count,
      exists:     a container with that name, alias, compose service or id prefix is in the snapshot
      candidates: [CANDIDATE] (at most 5, the most likely first)
      best:       candidates[0] or null
      networks:      this container's networks;  user_networks: those that are user-defined
      similar:    names in the snapshot close to it (for typos), at most 3
      diagnosis:
          "default-bridge"     the container with that name is on no user-defined network (only the
                               default bridge, which has no DNS), so no container can resolve it
          "different-networks" it is on a user-defined network this container is not on
          "not-running"        they share a user-defined network, but the target is not running
                               (Docker's DNS answers only for running containers)
          "resolvable-now"     they share a user-defined network and the target runs: it resolves now
                               (it was stopped or not yet started when the line was written)
          "no-such-container"  no container is called that (typo, or the service is not up)
          "external-name"      a dotted name that is no container: the container's DNS to the outside
    }
    CANDIDATE = {name, display_name, matched_by, running, networks, shared_networks, shared_user_networks}

All facts about the targets are as of the snapshot; the log line may be older. Work is bounded: each
log line is matched against a fixed set of RE2 patterns (linear time) after a cheap keyword test,
and at most MAX_REFERENCES upstreams and unresolved names are kept per container.
"""

from __future__ import annotations

import difflib
import ipaddress

import re2

from doctor import facts

MAX_REFERENCES = 20
MAX_LINE = 8192
MAX_QUOTE = 500
NO_DNS_NETWORKS = ("bridge", "host", "none")  # networks on which Docker's embedded DNS does not answer
LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")

_HOST = r'(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/"\'()\[\]]+)'

# nginx: ... while connecting to upstream, client: ..., upstream: "http://127.0.0.1:3001/", host: ...
_PROXY_URL = re2.compile(r'upstream: "(?P<url>[^"]{1,512})"')
_URL = re2.compile(r'^(?P<scheme>[a-z][a-z0-9+.-]{0,15})://' + _HOST + r'(?::(?P<port>\d{1,5}))?')
_ERRNO = re2.compile(r'\((?P<errno>\d+): [^)]*\)')

# An app's or a client library's "connection refused", with the host (and port) it names.
_CLIENT_REFUSED = [re2.compile(p) for p in (
    r'connect ECONNREFUSED ' + _HOST + r':(?P<port>\d{1,5})',                       # node
    r'dial tcp ' + _HOST + r':(?P<port>\d{1,5}): connect: connection refused',      # Go
    # libpq 14+
    r'connection to server at "(?P<host>[^"]+)"(?: \((?P<ip>[^)]+)\))?, port (?P<port>\d{1,5}) failed: '
    r'Connection refused',
    r'Is the server running on host "(?P<host>[^"]+)" \((?P<ip>[^)]+)\) and accepting',   # libpq (psycopg2)
    r'Error 111 connecting to ' + _HOST + r':(?P<port>\d{1,5})\. Connection refused',   # redis-py
    # requests / urllib3
    r"HTTPS?ConnectionPool\(host='(?P<host>[^']+)', port=(?P<port>\d{1,5})\).*(?:Connection refused|Errno 111\])",
    r"can't connect to remote host \((?P<ip>[^)]+)\): Connection refused",          # BusyBox wget
    # curl
    r'Failed to connect to ' + _HOST + r' port (?P<port>\d{1,5})\b.*(?:Connection refused|Couldn.t connect)',
    r"Can't connect to MySQL server on '(?P<host>[^':]+)(?::(?P<port>\d{1,5}))?' \((?:111|\[Errno 111\])",
)]

# A name that did not resolve, as the common software says it.
_UNRESOLVED = [re2.compile(p) for p in (
    r'host not found in upstream "(?P<name>[^":\s]+)',                              # nginx at start
    r'(?P<name>[\w.-]+) could not be resolved \(\d+: ',                             # nginx with a resolver
    r'getaddrinfo (?:ENOTFOUND|EAI_AGAIN) (?P<name>[^\s:]+)',                       # node
    r'Could not resolve host: (?P<name>[^\s;:]+)',                                  # curl
    r"bad address '(?P<name>[^':]+)",                                               # BusyBox wget
    # Go
    r'lookup (?P<name>[^\s:]+)(?: on [^\s:]+:\d+)?: (?:no such host|server misbehaving|Temporary failure)',
    r'could not translate host name "(?P<name>[^"]+)" to address',                  # libpq
    r"Failed to resolve '(?P<name>[^']+)'",                                         # urllib3 2
    # urllib3 1.x
    r"HTTPS?ConnectionPool\(host='(?P<name>[^']+)', port=\d+\).*(?:Name or service not known|"
    r"Temporary failure in name resolution|No address associated with hostname|nodename nor servname)",
    r"Unknown MySQL server host '(?P<name>[^']+)'",
    # redis-py
    r'Error -?\d+ connecting to (?P<name>[^\s:]+):\d+\. '
    r'(?:Name or service not known|Temporary failure in name resolution|No address associated)',
    r'UnknownHostException: (?P<name>[^\s:]+)',                                     # Java
    r'getaddrinfo for (?P<name>\S+) failed',                                        # PHP
)]

_REFUSED_WORDS = ("refused", "ECONNREFUSED", "Error 111", "Errno 111", "(111)",
                  "Is the server running on host")  # psycopg2 names the host on the line after "refused"
_UNRESOLVED_WORDS = ("not found in upstream", "could not be resolved", "getaddrinfo", "resolve",
                     "bad address", "lookup ", "translate host", "Unknown MySQL server host",
                     "UnknownHostException", "Name or service not known")


def _quote(line: str) -> str:
    return line if len(line) <= MAX_QUOTE else line[: MAX_QUOTE - 1] + "…"


def _clean_host(host: str | None) -> str | None:
    if not host:
        return None
    host = host.strip().strip("[]").rstrip(".")
    return host or None


def is_loopback(host: str) -> bool:
    """A loopback address, or a name that always means one (`localhost`)."""
    return host.lower() in LOOPBACK_NAMES or facts.is_loopback(host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# ---- reading one container's log ---------------------------------------------------------------

def _proxy_failure(line: str) -> dict | None:
    """nginx's upstream error lines."""
    if "upstream" not in line:
        return None
    if "upstream timed out" in line:
        kind = "timeout"
    elif "upstream prematurely closed connection" in line:
        kind = "closed"
    elif "while connecting to upstream" in line:
        errno = _ERRNO.search(line)
        code = errno.group("errno") if errno else ""
        kind = {"111": "refused", "113": "unreachable", "101": "unreachable", "110": "timeout"}.get(code)
        if kind is None:
            return None
    elif "(104: Connection reset by peer)" in line:
        kind = "reset"
    else:
        return None
    found = _PROXY_URL.search(line)
    if not found:
        return None
    url = found.group("url")
    parsed = _URL.match(url)
    if not parsed or parsed.group("host") in (None, "unix"):
        return None
    return {
        "kind": kind, "via": "proxy",
        "phase": "connecting" if "while connecting to upstream" in line else "reading",
        "url": url, "scheme": parsed.group("scheme"), "host": _clean_host(parsed.group("host")),
        "tcp_port": int(parsed.group("port")) if parsed.group("port") else _DEFAULT_PORTS.get(parsed.group("scheme")),
        "ip": None,
    }


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _client_failure(line: str) -> dict | None:
    if not any(word in line for word in _REFUSED_WORDS):
        return None
    for pattern in _CLIENT_REFUSED:
        found = pattern.search(line)
        if found:
            groups = found.groupdict()
            ip = _clean_host(groups.get("ip"))
            host = _clean_host(groups.get("host")) or ip
            port = groups.get("port")
            return {"kind": "refused", "via": "client", "phase": "connecting", "url": None, "scheme": None,
                    "host": host, "tcp_port": int(port) if port else None, "ip": ip}
    return None


def _unresolved_name(line: str) -> str | None:
    if not any(word in line for word in _UNRESOLVED_WORDS):
        return None
    for pattern in _UNRESOLVED:
        found = pattern.search(line)
        if found:
            name = _clean_host(found.group("name"))
            if name and not _is_ip(name):
                return name
    return None


def references(lines: list[str] | None) -> tuple[list[dict], list[dict]]:
    """The failed connections and the unresolved names in one log tail (before any join)."""
    upstreams: dict[tuple, dict] = {}
    unresolved: dict[str, dict] = {}
    for raw in lines or []:
        if not isinstance(raw, str):
            continue
        line = raw[:MAX_LINE]
        failure = _proxy_failure(line) or _client_failure(line)
        if failure and failure["host"]:
            key = (failure["kind"], failure["via"], failure["host"], failure["tcp_port"])
            entry = upstreams.pop(key, None) or dict(failure, count=0)
            entry["count"] += 1
            entry["line"] = _quote(raw)
            upstreams[key] = entry  # re-inserted: newest last
        name = _unresolved_name(line)
        if name:
            entry = unresolved.pop(name.lower(), None) or {"name": name, "count": 0}
            entry["count"] += 1
            entry["line"] = _quote(raw)
            unresolved[name.lower()] = entry
    return list(upstreams.values())[-MAX_REFERENCES:], list(unresolved.values())[-MAX_REFERENCES:]


# ---- the snapshot's names and addresses ------------------------------------------------------

def _network_names(container: dict) -> list[str]:
    return [n["name"] for n in container.get("networks") or [] if n.get("name")]


def _names(container: dict) -> list[tuple[str, str]]:
    """(name, how) pairs under which Docker's DNS (or a user) knows this container."""
    out = [(container.get("name") or "", "name")]
    compose = container.get("compose") or {}
    if compose.get("service"):
        out.append((compose["service"], "service"))
    for network in container.get("networks") or []:
        for alias in network.get("aliases") or []:
            out.append((alias, "alias"))
    if container.get("short_id"):
        out.append((container["short_id"], "id"))
    return [(name.lower(), how) for name, how in out if name]


class _Index:
    def __init__(self, containers: list[dict]):
        self.containers = containers
        self.by_ip: dict[str, list[tuple[dict, str]]] = {}
        self.by_name: dict[str, list[tuple[dict, str]]] = {}
        for container in containers:
            for network in container.get("networks") or []:
                if network.get("ip"):
                    self.by_ip.setdefault(network["ip"], []).append((container, network["name"]))
            seen = set()
            for name, how in _names(container):
                if name not in seen:
                    seen.add(name)
                    self.by_name.setdefault(name, []).append((container, how))
        self.all_names = sorted(self.by_name)

    def named(self, name: str) -> list[tuple[dict, str]]:
        name = name.lower()
        found = self.by_name.get(name, [])
        if not found and len(name) >= 12 and all(c in "0123456789abcdef" for c in name):
            found = [(c, "id") for c, _ in self.by_name.get(name[:12], [])]
        return found


def _shared(a: dict, b: dict) -> list[str]:
    mine = _network_names(a)
    theirs = set(_network_names(b))
    return [n for n in mine if n in theirs]


def _running(container: dict) -> bool:
    return bool((container.get("state") or {}).get("running"))


def _reachable(listener: dict) -> bool:
    """A listener other containers can reach: not on 127.0.0.0/8 or ::1. (Docker's embedded DNS
    listens on 127.0.0.11 in every container on a user-defined network; that is no app.)"""
    return not is_loopback(str(listener.get("address") or ""))


def _target(container: dict, target: dict, how: str, port: int | None) -> dict:
    listeners = target.get("listeners")
    on_port = None
    listens = listens_reachable = None
    if listeners is not None and port is not None:
        on_port = [l for l in listeners if l.get("port") == port]
        listens = bool(on_port)
        listens_reachable = any(_reachable(l) for l in on_port)
    elif listeners is not None:
        on_port = [l for l in listeners if _reachable(l)]
    return {
        "name": target.get("name"),
        "display_name": target.get("display_name") or target.get("name"),
        "matched_by": how,
        "running": _running(target),
        "networks": _network_names(target),
        "shared_networks": _network_names(target) if how == "self" else _shared(container, target),
        "endpoints": [l.get("endpoint") or f"{l.get('address')}:{l.get('port')}" for l in on_port]
        if on_port is not None else None,
        "listens": listens,
        "listens_reachable": listens_reachable,
        "open_ports": sorted({l.get("port") for l in listeners if _reachable(l)}) if listeners is not None else None,
    }


def _resolve_upstream(container: dict, upstream: dict, index: _Index) -> None:
    host, port = upstream["host"], upstream["tcp_port"]
    # The IP the line names wins over the name ("localhost" (127.0.0.1) is loopback, "db" (172.18.0.2) not).
    ip = upstream.get("ip")
    upstream["loopback"] = is_loopback(ip) if ip else is_loopback(host)
    upstream["address"] = f"{host}:{port}" if port is not None else host
    target = None
    if upstream["loopback"]:
        target = _target(container, container, "self", port)
    else:
        ip = upstream.get("ip") or (host if _is_ip(host) else None)
        matches = [(c, "ip") for c, _net in index.by_ip.get(ip, [])] if ip else []
        if not matches and not _is_ip(host):
            matches = index.named(host)
        # Prefer a running container on a network this one shares.
        matches.sort(key=lambda m: (not _shared(container, m[0]), not _running(m[0])))
        if matches:
            target = _target(container, matches[0][0], matches[0][1], port)
    upstream["target"] = target
    upstream["listening_peers"] = _listening_peers(container, port, index)
    upstream["diagnosis"] = _upstream_diagnosis(upstream, target, host)
    upstream.pop("ip", None)


def _listening_peers(container: dict, port: int | None, index: _Index) -> list[str]:
    if port is None:
        return []
    peers = []
    for other in index.containers:
        if other is container or not _running(other) or not _shared(container, other):
            continue
        if any(l.get("port") == port and _reachable(l) for l in other.get("listeners") or []):
            peers.append(other.get("name"))
    return peers[:5]


def _upstream_diagnosis(upstream: dict, target: dict | None, host: str) -> str:
    if upstream["loopback"]:
        return "loopback"
    if target is None:
        return "no-such-ip" if _is_ip(host) else "no-such-name"
    if not target["running"]:
        return "target-not-running"
    if not target["shared_networks"]:
        return "target-not-shared"
    if upstream["tcp_port"] is None:
        return "target-found"
    if target["listens"] is None:
        return "target-sockets-unknown"
    if target["listens"] and not target["listens_reachable"]:
        return "target-loopback-only"
    if not target["listens"]:
        return "target-wrong-port" if target["open_ports"] else "target-no-listener"
    return "target-listening"


def _resolve_name(container: dict, entry: dict, index: _Index) -> None:
    name = entry["name"]
    candidates = []
    for target, how in index.named(name):
        shared = _shared(container, target)
        candidates.append({
            "name": target.get("name"),
            "display_name": target.get("display_name") or target.get("name"),
            "matched_by": how,
            "running": _running(target),
            "networks": _network_names(target),
            "shared_networks": shared,
            "shared_user_networks": [n for n in shared if n not in NO_DNS_NETWORKS],
        })
    candidates.sort(key=lambda c: (not c["shared_user_networks"], not c["running"], not c["shared_networks"]))
    candidates = candidates[:5]
    best = candidates[0] if candidates else None
    networks = _network_names(container)
    entry.update({
        "exists": bool(candidates),
        "candidates": candidates,
        "best": best,
        "networks": networks,
        "user_networks": [n for n in networks if n not in NO_DNS_NETWORKS],
        "similar": [] if candidates else difflib.get_close_matches(name.lower(), index.all_names, n=3, cutoff=0.75),
    })
    if best is None:
        entry["diagnosis"] = "external-name" if "." in name else "no-such-container"
    elif best["shared_user_networks"]:
        entry["diagnosis"] = "resolvable-now" if best["running"] else "not-running"
    elif any(n not in NO_DNS_NETWORKS for n in best["networks"]):
        entry["diagnosis"] = "different-networks"
    else:
        entry["diagnosis"] = "default-bridge"


def peer_from_summary(summary: dict) -> dict:
    """A container known only from the list call (`GET /containers/json`, what `docker ps` shows):
    enough for the join to find it by name, compose service, alias or IP. Its sockets are unknown,
    so a target found this way answers "target-sockets-unknown" rather than a guess."""
    labels = summary.get("Labels") or {}
    name = ((summary.get("Names") or ["/"])[0] or "/").lstrip("/")
    networks = (summary.get("NetworkSettings") or {}).get("Networks") or {}
    service = labels.get("com.docker.compose.service")
    return {
        "id": summary.get("Id", ""),
        "short_id": summary.get("Id", "")[:12],
        "name": name,
        "display_name": name,
        "compose": {"project": labels.get("com.docker.compose.project"), "service": service} if service else None,
        "state": {"running": summary.get("State") == "running"},
        "networks": [{"name": net, "ip": data.get("IPAddress") or None, "aliases": data.get("Aliases") or []}
                     for net, data in sorted(networks.items())],
        "listeners": None,
        "reachable_ports": None,
    }


def join(containers: list[dict], peers: list[dict] | None = None) -> None:
    """Add `upstreams` and `unresolved` (see the module docstring) to every container, in place.

    `peers` are other containers to look for (by name, alias and IP) without diagnosing them:
    when a scan names some containers, the rest of `docker ps` (see peer_from_summary) still
    tells whether a name exists and where."""
    index = _Index(list(containers) + list(peers or []))
    for container in containers:
        lines = (container.get("logs") or {}).get("lines")
        upstreams, unresolved = references(lines)
        for upstream in upstreams:
            _resolve_upstream(container, upstream, index)
        for entry in unresolved:
            _resolve_name(container, entry, index)
        container["upstreams"] = upstreams
        container["unresolved"] = unresolved
        if container.get("logs") is None and "logs" in (container.get("unknown") or {}):
            # No log, no references: say so, so rules reading these answer "unknown", not "none".
            container["unknown"].setdefault("upstreams", container["unknown"]["logs"])
            container["unknown"].setdefault("unresolved", container["unknown"]["logs"])
