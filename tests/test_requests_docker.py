"""How many Engine API requests a scan makes, counted by a real proxy on a unix socket.

The promise: one list call, then exactly one inspect and one log request per container, and
nothing that changes a container. docker-py's own logs() would inspect a second time.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import threading

import pytest

from tests import dockerlab

REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")
DOCKER_SOCKET = "/var/run/docker.sock"


class CountingProxy:
    """Forwards a unix socket to the Docker socket and records every request line it sees."""

    def __init__(self, path: str, upstream: str = DOCKER_SOCKET):
        self.path, self.upstream = path, upstream
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, target, record: bool):
        pending = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record:
                    pending = (pending + data)[-4096:]
                    for match in REQUEST_LINE.finditer(pending):
                        with self.lock:
                            self.requests.append((match.group(1).decode(), match.group(2).decode()))
                    pending = pending[pending.rfind(b"\r\n") + 2:] if REQUEST_LINE.search(pending) else pending
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.server.close()
        os.unlink(self.path)


@pytest.fixture
def proxy(tmp_path, docker_api):
    if not os.path.exists(DOCKER_SOCKET):
        pytest.fail(f"this test proxies {DOCKER_SOCKET}, which does not exist here", pytrace=False)
    proxy = CountingProxy(str(tmp_path / "docker.sock"))
    yield proxy
    proxy.close()


def test_one_list_then_one_inspect_and_one_log_tail_per_container(lab, busybox, proxy):
    names = [lab.run(busybox, ["httpd", "-f", "-p", "80"], name=f"count{i}", ports={80: dockerlab.free_port()})
             for i in range(3)]
    names.append(lab.run(busybox, ["sh", "-c", "echo bye; exit 2"], name="count-exited"))
    lab.wait_for(names[-1], lambda i: i["State"]["Status"] == "exited")
    ids = {lab.inspect(n)["Id"] for n in names}

    result = dockerlab.dockdoc("scan", "--format", "json", "--fail-on", "never",
                               f"dockdoc-test-{dockerlab.RUN_ID}-count*",
                               env={"DOCKER_HOST": f"unix://{proxy.path}"})
    assert result.returncode == 0, result.stderr

    paths = [re.sub(r"^/v[0-9.]+", "", path.split("?")[0]) for _, path in proxy.requests]
    counts = collections.Counter(paths)
    assert counts["/containers/json"] == 1
    for container_id in ids:
        assert counts[f"/containers/{container_id}/json"] == 1, counts
        assert counts[f"/containers/{container_id}/logs"] == 1, counts
    container_paths = [p for p in paths if p.startswith("/containers/")]
    assert len(container_paths) == 1 + 2 * len(ids), counts  # nothing else touches a container
    assert all(method == "GET" for method, _ in proxy.requests), proxy.requests
    # /version: once by docker-py's API version negotiation, once for the daemon facts.
    assert counts["/version"] <= 2
    assert set(counts) <= {"/version", "/_ping", "/containers/json"} | {
        f"/containers/{i}/{what}" for i in ids for what in ("json", "logs")}
