"""When this host cannot see a container's processes (Docker Desktop, a remote daemon, another PID
namespace), socket facts are unknown with the reason, rules that need them stay silent, and
`--exec` opts in to reading them inside the container, saying so.

dockdoc runs in a new PID namespace (`unshare --pid --mount-proc`), which reproduces "the pid in
State.Pid is not visible here" for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import dockerlab


def _in_other_pid_namespace(*args: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("this test needs root and unshare(1) (util-linux) to start dockdoc in a new PID namespace",
                    pytrace=False)
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "doctor", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_sockets_unknown_without_exec_and_read_inside_with_exec(lab, busybox):
    name = lab.run(busybox, ["httpd", "-f", "-p", "127.0.0.1:5000"], name="hidden-pid",
                   ports={5000: dockerlab.free_port()})
    lab.wait_listening(name, 5000)

    blind = _in_other_pid_namespace("scan", "--format", "json", name)
    assert blind.returncode == 0, blind.stderr  # unknown is not an error finding
    report = json.loads(blind.stdout)
    container = report["containers"][0]
    assert "is not visible here" in container["unknown"]["listeners"]
    assert "--exec" in container["unknown"]["listeners"]  # the way out is named
    assert report["findings"] == [] and container["unknown_checks"] > 0
    assert "exec_" not in blind.stderr

    told = _in_other_pid_namespace("scan", "--format", "json", "--exec", name)
    assert told.returncode == 1, told.stderr
    assert "inside" in told.stderr and "cat /proc/net/tcp" in told.stderr  # it says what it runs
    findings = json.loads(told.stdout)["findings"]
    assert [f["cause"] for f in findings] == ["bind-loopback"]
    assert any("docker exec" in line for line in findings[0]["evidence"])
