"""Host facts from psutil: who holds a host port that a container wants."""

from __future__ import annotations

import psutil


def port_owners(wanted: set[tuple[str, int]]) -> dict[str, dict]:
    """Host processes listening on the wanted (host_ip, host_port) pairs, keyed "ip:port/tcp".

    Only called when a container could not get its port, so a normal scan never pays for the
    walk over every process's sockets. Without root, other users' pids are unknown (None).
    """
    if not wanted:
        return {}
    ports = {port for _, port in wanted}
    owners: dict[str, dict] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return {}
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in ports:
            continue
        name = None
        if conn.pid:
            try:
                name = psutil.Process(conn.pid).name()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        for host_ip, port in wanted:
            if port == conn.laddr.port and overlaps(host_ip, conn.laddr.ip):
                owners[f"{host_ip or '0.0.0.0'}:{port}/tcp"] = {
                    "kind": "process",
                    "pid": conn.pid,
                    "name": name,
                    "address": f"{conn.laddr.ip}:{conn.laddr.port}",
                }
    return owners


def overlaps(wanted_ip: str, held_ip: str) -> bool:
    """A bind on the wildcard conflicts with any address on the same port, and vice versa."""
    wildcard = ("", "0.0.0.0", "::")
    return wanted_ip in wildcard or held_ip in wildcard or wanted_ip == held_ip
