"""Test infrastructure for real containers: images built locally, containers labelled and removed.

Everything the suite creates carries the label `dockdoc.test=<run id>` and a name starting with
`dockdoc-test-`; cleanup removes only that, so running the suite on a machine with real work on
it loses nothing. No registry is needed: images come from `docker import`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import docker
import docker.errors

RUN_ID = uuid.uuid4().hex[:10]
LABEL = "dockdoc.test"
# Who created a container: leftovers are only those whose creating process is gone, so two test
# sessions on one daemon (CI and a developer, or parallel runs) never remove each other's.
OWNER_LABEL = "dockdoc.test.owner"
OWNER = f"{socket.gethostname()}:{os.getpid()}"
BUSYBOX_IMAGE = "dockdoc-test/busybox:2"
DEBIAN_IMAGE = "dockdoc-test/debian-apps:1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Files the busybox image carries so that "not executable" failures can be reproduced for real.
_EXTRA_FILES = {
    "/app/no-exec.sh": (b"#!/bin/sh\necho hi\n", 0o644),
    "/app/crlf.sh": (b"#!/bin/sh\r\necho hi\r\n", 0o755),
    "/app/garbage.bin": (b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\xb7\x00" + b"\x00" * 100, 0o755),
}


def find_static_busybox() -> str:
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if candidate and os.path.exists(candidate):
            out = subprocess.run(["file", "-L", candidate], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically linked"
            if "statically linked" in out or "static-pie" in out:
                return candidate
    raise RuntimeError("a static busybox is needed to build test images: apt-get install busybox-static")


def busybox_tar() -> bytes:
    """A root filesystem with only a static busybox and its applets: builds in a second."""
    binary = find_static_busybox()
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "app", "etc", "www"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(binary, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        files = dict(_EXTRA_FILES)
        files["/etc/passwd"] = (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n", 0o644)
        files["/etc/group"] = (b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        files["/etc/hosts"] = (b"127.0.0.1 localhost\n::1 localhost\n", 0o644)
        files["/www/index.html"] = (b"ok\n", 0o644)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_busybox_image(api) -> str:
    try:
        api.inspect_image(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    repository, tag = BUSYBOX_IMAGE.split(":")
    api.import_image_from_data(busybox_tar(), repository=repository, tag=tag,
                               changes=["ENV PATH=/bin", "LABEL dockdoc.test-image=1", "WORKDIR /"])
    return BUSYBOX_IMAGE


def ensure_debian_image(api) -> str:
    """Debian with flask, gunicorn, uvicorn, django and nginx-light, built by build-debian.sh."""
    try:
        api.inspect_image(DEBIAN_IMAGE)
        return DEBIAN_IMAGE
    except docker.errors.ImageNotFound:
        pass
    script = HERE / "images" / "build-debian.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cannot build {DEBIAN_IMAGE} ({script}): {result.stderr.strip()[-500:]} "
                           f"- run `sudo bash {script}` once")
    return DEBIAN_IMAGE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    """Creates containers for one test and removes them afterwards."""

    def __init__(self, api):
        self.api = api
        self.created: list[str] = []

    def run(self, image: str, command=None, *, name: str | None = None, start: bool = True,
            ports: dict | None = None, labels: dict | None = None, expect_start_error: bool = False,
            healthcheck: dict | None = None, **host_config) -> str:
        """Create (and start) a container; returns its name. `ports` maps container port -> host
        binding as in docker-py ({5000: 8080} or {5000: ('127.0.0.1', 8080)})."""
        name = f"dockdoc-test-{RUN_ID}-{name or uuid.uuid4().hex[:6]}"
        all_labels = {LABEL: RUN_ID, OWNER_LABEL: OWNER, **(labels or {})}
        config = self.api.create_host_config(port_bindings=ports or None, **host_config)
        container = self.api.create_container(
            image, command=command, name=name, labels=all_labels, host_config=config,
            ports=list(ports) if ports else None, healthcheck=healthcheck,
        )
        self.created.append(container["Id"])
        if start:
            try:
                self.api.start(container["Id"])
            except docker.errors.APIError:
                if not expect_start_error:
                    raise
        return name

    def inspect(self, name: str) -> dict:
        return self.api.inspect_container(name)

    def wait_for(self, name: str, predicate, timeout: float = 30, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.inspect(name)
            if predicate(info):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: timed out after {timeout}s waiting for {what}; "
                                     f"state {json.dumps(info['State'])[:400]}")
            time.sleep(0.2)

    def wait_listening(self, name: str, port: int, timeout: float = 30) -> None:
        """Until the container's namespace has a listener on `port` (read as dockdoc reads it)."""
        from doctor.collect.sockets import read_listeners

        def ready(info):
            pid = info["State"].get("Pid")
            if not pid:
                return False
            try:
                return any(l["port"] == port for l in read_listeners(pid))
            except OSError:
                return False

        self.wait_for(name, ready, timeout, what=f"a listener on port {port}")

    def cleanup(self) -> None:
        for container_id in self.created:
            try:
                self.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass


def remove_leftovers(api) -> None:
    """Containers from earlier, interrupted runs of this suite (and only those): ours by label and
    name, and created by a process that no longer exists."""
    import psutil

    host = socket.gethostname()
    for summary in api.containers(all=True, filters={"label": LABEL}):
        names = summary.get("Names") or []
        if not any(n.lstrip("/").startswith("dockdoc-test-") for n in names):
            continue
        owner_host, _, pid = (summary.get("Labels") or {}).get(OWNER_LABEL, "").partition(":")
        if owner_host != host or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue  # another machine's, unknown, or its creator is still running
        try:
            api.remove_container(summary["Id"], force=True, v=True)
        except docker.errors.NotFound:
            pass


def dockdoc(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as a user would."""
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def scan_json(*names: str, extra=()) -> dict:
    result = dockdoc("scan", "--format", "json", "--fail-on", "never", *extra, *names)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def causes_of(report: dict, name: str, min_severity: str = "info") -> set[str]:
    ranks = {"info": 0, "warning": 1, "error": 2}
    return {f["cause"] for f in report["findings"]
            if f["container"]["name"] == name and ranks[f["severity"]] >= ranks[min_severity]}
