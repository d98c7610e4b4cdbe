"""Connecting to the Docker daemon, and turning connection failures into one actionable line."""

from __future__ import annotations

import os

import docker
import docker.errors
import requests.exceptions

from doctor.errors import DockerUnavailable


def connect(timeout: int = 30) -> docker.APIClient:
    """A low-level client configured the way the docker CLI would be.

    `from_env()` reads DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH and, when DOCKER_HOST is
    unset, the current docker context (docker-py >= 7.2). ssh:// goes through the system's ssh
    client, so no paramiko is needed. Only the low-level APIClient is used afterwards: dockdoc only
    reads, and the high-level objects re-inspect on reload.
    """
    try:
        client = docker.from_env(timeout=timeout, use_ssh_client=True)
    except docker.errors.DockerException as exc:
        raise describe_failure(exc, _target()) from exc
    _one_pool_per_socket(client.api)
    return client.api


def _one_pool_per_socket(api) -> None:
    """docker-py's unix-socket adapter keys its connection pools by the full request URL, so each
    container's inspect and logs URL gets a pool and a new connection of its own (408 connections
    for 200 containers). The pools all dial the same socket: key them by the socket instead, and
    connections are reused (as many as the pool holds, more than our 4 threads)."""
    adapter = api.adapters.get("http+docker://")
    if adapter is None or not hasattr(adapter, "socket_path"):
        return  # tcp:// and ssh:// adapters pool per host already
    get_connection = adapter.get_connection
    adapter.get_connection = lambda url, proxies=None: get_connection("http+docker://localhost/", proxies)
    # No HTTP proxy applies to a unix socket, yet requests reads the proxy variables from the
    # environment on every request (a tenth of a 200-container scan): tell it not to.
    api.trust_env = False


def _target() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def describe_failure(exc: BaseException, target: str | None = None) -> DockerUnavailable:
    """Map the many ways a connection fails to what the user should check."""
    target = target or _target()
    chain = []
    seen = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    types = tuple(type(e) for e in chain)

    def has(kind) -> bool:
        return any(issubclass(t, kind) for t in types) or kind.__name__ in text

    if "Invalid bind address" in text or "Install paramiko" in text:
        return DockerUnavailable(
            f"invalid DOCKER_HOST {target!r}: {chain[0]}",
            "use unix:///path/to/docker.sock, tcp://host:2376 or ssh://user@host",
        )
    if has(PermissionError) or "Permission denied" in text:
        return DockerUnavailable(
            f"permission denied on the Docker socket {target}",
            "add your user to the 'docker' group (then log in again) or run with sudo",
        )
    if has(FileNotFoundError):
        return DockerUnavailable(
            f"cannot connect to the Docker daemon at {target}: the socket does not exist",
            "is the daemon running? is DOCKER_HOST right?",
        )
    if has(ConnectionRefusedError) or "Connection refused" in text:
        return DockerUnavailable(
            f"cannot connect to the Docker daemon at {target}: connection refused",
            "is the daemon running and listening there? is DOCKER_HOST right?",
        )
    if "NameResolutionError" in text or "Name or service not known" in text:
        return DockerUnavailable(
            f"cannot resolve the host in DOCKER_HOST={target}", "check the host name"
        )
    if has(requests.exceptions.Timeout) or "timed out" in text:
        return DockerUnavailable(
            f"the Docker daemon at {target} did not answer in time",
            "is it overloaded or behind a firewall?",
        )
    first = str(chain[0]).splitlines()[0] if str(chain[0]) else type(chain[0]).__name__
    return DockerUnavailable(f"cannot talk to the Docker daemon at {target}: {first}")
