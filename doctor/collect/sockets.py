"""Listening TCP sockets from /proc/<pid>/net/tcp{,6}: what the app inside really listens on.

Reading another network namespace's /proc/<pid>/net/tcp needs no ptrace rights, only that the
pid is visible from here, which is what makes this work without `docker exec`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

LISTEN = "0A"


def _ipv4(hex_addr: str) -> str:
    # The kernel prints the address as one native-endian 32-bit word.
    return socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(hex_addr, 16)))


def _ipv6(hex_addr: str) -> str:
    # Four 32-bit words, each in native byte order.
    words = [int(hex_addr[i : i + 8], 16) for i in range(0, 32, 8)]
    packed = struct.pack("=4I", *words)
    addr = ipaddress.IPv6Address(packed)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def parse_proc_net_tcp(text: str, ipv6: bool) -> list[dict]:
    """The listening sockets in one /proc/net/tcp or tcp6 text, as {address, port, proto}."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != LISTEN:
            continue
        addr_hex, _, port_hex = fields[1].partition(":")
        try:
            address = _ipv6(addr_hex) if ipv6 else _ipv4(addr_hex)
            port = int(port_hex, 16)
        except (ValueError, struct.error):
            continue  # a line we do not understand is skipped, not fatal
        host = f"[{address}]" if ":" in address else address
        found.append({"address": address, "port": port, "proto": "tcp", "endpoint": f"{host}:{port}"})
    return found


def read_listeners(pid: int, proc: str = "/proc") -> list[dict]:
    """Listening sockets of the network namespace that `pid` lives in. Raises OSError."""
    listeners = []
    for name, ipv6 in (("tcp", False), ("tcp6", True)):
        try:
            text = _read_all(f"{proc}/{pid}/net/{name}")
        except FileNotFoundError:
            if not ipv6:
                raise
            continue  # tcp6 is absent when the kernel has no IPv6; tcp alone is then the whole answer
        listeners.extend(parse_proc_net_tcp(text, ipv6))
    return dedupe(listeners)


_CHUNK = 1 << 20


def _read_all(path: str) -> str:
    """The whole file in as few read() calls as possible. Every read of /proc/net/tcp walks the
    kernel's entire TCP hash table (all namespaces share it: ~1.6 ms on a big host), and a
    buffered read() ends with one more read just to see EOF. seq_file fills the buffer until it
    is full or the file ends, so a short read is the end."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _CHUNK)
            chunks.append(chunk)
            if len(chunk) < _CHUNK:
                break
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def dedupe(listeners: list[dict]) -> list[dict]:
    seen, out = set(), []
    for item in listeners:
        key = (item["address"], item["port"])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return sorted(out, key=lambda i: (i["port"], i["address"]))
