"""The two ways of reading a container's listening sockets agree on real containers:
sock_diag inside its network namespace (fast, needs root) and /proc/<pid>/net/tcp{,6}."""

from __future__ import annotations

import os

import pytest

from doctor.collect import netlink, sockets


def test_sock_diag_and_proc_agree(lab, busybox):
    if os.geteuid() != 0:
        pytest.fail("sock_diag in another network namespace needs root (setns)", pytrace=False)
    name = lab.run(busybox, ["sh", "-c", "httpd -f -p 127.0.0.1:5000 & httpd -f -p 8080 & "
                                         "httpd -f -p 0.0.0.0:9000 & wait"], name="two-readers")
    for port in (5000, 8080, 9000):
        lab.wait_listening(name, port)
    pid = lab.inspect(name)["State"]["Pid"]
    before = os.readlink("/proc/thread-self/ns/net")

    by_netlink = netlink.listeners_in_netns(pid)
    by_proc = sockets.read_listeners(pid)

    assert os.readlink("/proc/thread-self/ns/net") == before  # the thread came home
    assert sorted(by_netlink, key=lambda l: (l["port"], l["address"])) == by_proc
    assert {(l["address"], l["port"]) for l in by_proc} >= {("127.0.0.1", 5000), ("::", 8080), ("0.0.0.0", 9000)}


def test_sock_diag_of_a_vanished_process_is_an_error_not_a_wrong_answer():
    before = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(FileNotFoundError):
        netlink.listeners_in_netns(2 ** 22 + 12345)  # no such pid (above pid_max's default)
    assert os.readlink("/proc/thread-self/ns/net") == before
