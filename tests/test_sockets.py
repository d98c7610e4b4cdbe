"""/proc/net/tcp{,6} parsing: what the app inside a container really listens on.

The texts below are in the kernel's format. IPv4 addresses are one native-endian 32-bit word
(little-endian on x86_64: 127.0.0.1 prints as 0100007F); IPv6 addresses are four such words.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

from doctor.collect.sockets import dedupe, parse_proc_net_tcp, read_listeners

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the texts below are little-endian /proc output")

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41234 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41235 1 0000000000000000 100 0 0 10 0
   2: 0200A8C0:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41236 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1388 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 41237 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:D431 0100007F:1388 06 00000000:00000000 03:00000D91 00000000     0        0 0 3 0000000000000000
"""

TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51235 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51236 1 0000000000000000 100 0 0 10 0
   3: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51237 1 0000000000000000 100 0 0 10 0
   4: 00000000000000000000000001000000:0BB8 00000000000000000000000001000000:D6D8 01 00000000:00000000 00:00000000 00000000     0        0 51238 1 0000000000000000 20 4 30 10 -1
"""


def _pairs(listeners):
    return [(l["address"], l["port"]) for l in listeners]


def test_ipv4_listeners():
    found = parse_proc_net_tcp(TCP, ipv6=False)
    assert _pairs(found) == [("127.0.0.1", 5000), ("0.0.0.0", 8080), ("192.168.0.2", 22)]
    assert found[0] == {"address": "127.0.0.1", "port": 5000, "proto": "tcp", "endpoint": "127.0.0.1:5000"}


def test_only_listen_state_counts():
    # line 3 is an ESTABLISHED connection on the same local port, line 4 a TIME_WAIT
    found = parse_proc_net_tcp(TCP, ipv6=False)
    assert [l["port"] for l in found].count(5000) == 1
    assert 54321 not in [l["port"] for l in found]
    only_established = TCP.splitlines()[0] + "\n" + TCP.splitlines()[4] + "\n"
    assert parse_proc_net_tcp(only_established, ipv6=False) == []


def test_ipv6_listeners():
    found = parse_proc_net_tcp(TCP6, ipv6=True)
    assert _pairs(found) == [("::", 80), ("::1", 3000), ("127.0.0.1", 8000), ("2001:db8::1", 443)]
    assert [l["endpoint"] for l in found] == ["[::]:80", "[::1]:3000", "127.0.0.1:8000", "[2001:db8::1]:443"]


def test_ipv4_mapped_address_reads_as_ipv4():
    """::ffff:127.0.0.1 is loopback: rules that compare against 127.0.0.1 must see it as such."""
    (mapped,) = [l for l in parse_proc_net_tcp(TCP6, ipv6=True) if l["port"] == 8000]
    assert mapped["address"] == "127.0.0.1"


def test_header_only_and_empty():
    assert parse_proc_net_tcp("", ipv6=False) == []
    assert parse_proc_net_tcp(TCP.splitlines()[0], ipv6=False) == []
    assert parse_proc_net_tcp(TCP6.splitlines()[0] + "\n", ipv6=True) == []


@pytest.mark.parametrize("garbage", [
    "garbage",
    "   9: ZZZZZZZZ:1388 00000000:0000 0A 00000000:00000000",
    "   9: 0100007F:XYZ 00000000:0000 0A",
    "   9: 0100007F 00000000:0000 0A",
    "   9: 0100007F0100007F:1388 00000000:0000 0A",  # too long for an IPv4 address
    "   9: :1388 00000000:0000 0A",
    "",
    "\t",
    "   9: 0100007F:1388",
])
def test_garbage_lines_are_skipped(garbage):
    lines = TCP.splitlines()
    text = "\n".join([lines[0], garbage, lines[1], garbage, lines[2]]) + "\n"
    assert _pairs(parse_proc_net_tcp(text, ipv6=False)) == [("127.0.0.1", 5000), ("0.0.0.0", 8080)]


@pytest.mark.parametrize("garbage", [
    "   9: 0000000000000000:0050 00000000000000000000000000000000:0000 0A",  # too short for IPv6
    "   9: 0100007F:0050 00000000:0000 0A",  # an IPv4 line in tcp6
    "   9: GG000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A",
])
def test_garbage_ipv6_lines_are_skipped(garbage):
    lines = TCP6.splitlines()
    text = "\n".join([lines[0], garbage, lines[1]]) + "\n"
    assert _pairs(parse_proc_net_tcp(text, ipv6=True)) == [("::", 80)]


def test_dedupe_sorts_by_port_then_address():
    found = parse_proc_net_tcp(TCP, ipv6=False) + parse_proc_net_tcp(TCP6, ipv6=True)
    found += parse_proc_net_tcp(TCP, ipv6=False)
    assert _pairs(dedupe(found)) == [("192.168.0.2", 22), ("::", 80), ("2001:db8::1", 443), ("::1", 3000),
                                     ("127.0.0.1", 5000), ("127.0.0.1", 8000), ("0.0.0.0", 8080)]


def test_read_listeners_of_this_process():
    """The real kernel's text: sockets this test opens are found, with their addresses."""
    opened = []
    try:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
            sock = socket.socket(family)
            sock.bind((address, 0))
            sock.listen()
            opened.append((address, sock.getsockname()[1], sock))
        if socket.has_ipv6:
            try:
                sock = socket.socket(socket.AF_INET6)
                sock.bind(("::1", 0))
                sock.listen()
                opened.append(("::1", sock.getsockname()[1], sock))
            except OSError:
                pass  # no IPv6 on this host: tcp alone is the whole answer
        connected = socket.create_connection(("127.0.0.1", opened[0][1]))  # an ESTABLISHED pair too
        try:
            found = _pairs(read_listeners(os.getpid()))
        finally:
            connected.close()
        for address, port, _ in opened:
            assert (address, port) in found
        assert len([p for p in found if p[1] == opened[0][1]]) == 1
    finally:
        for _, _, sock in opened:
            sock.close()


def test_read_listeners_of_a_missing_pid(tmp_path):
    with pytest.raises(OSError):
        read_listeners(2**22 + 12345, proc=str(tmp_path))


def test_read_listeners_from_a_proc_tree(tmp_path):
    net = tmp_path / "123" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(TCP)
    # no tcp6: a kernel without IPv6; tcp alone is the answer
    assert _pairs(read_listeners(123, proc=str(tmp_path))) == [("192.168.0.2", 22), ("127.0.0.1", 5000),
                                                               ("0.0.0.0", 8080)]
    (net / "tcp6").write_text(TCP6)
    assert _pairs(read_listeners(123, proc=str(tmp_path))) == [
        ("192.168.0.2", 22), ("::", 80), ("2001:db8::1", 443), ("::1", 3000), ("127.0.0.1", 5000),
        ("127.0.0.1", 8000), ("0.0.0.0", 8080)]
