"""Fixtures for tests that need a real Docker Engine. A missing daemon fails the suite (never skips)."""

from __future__ import annotations

import pytest

from tests import dockerlab


@pytest.fixture(scope="session")
def docker_api():
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.api.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        pytest.fail(f"these tests need a running Docker Engine ({exc}); start dockerd or set DOCKER_HOST",
                    pytrace=False)
    dockerlab.remove_leftovers(client.api)
    return client.api


@pytest.fixture(scope="session")
def busybox(docker_api) -> str:
    return dockerlab.ensure_busybox_image(docker_api)


@pytest.fixture(scope="session")
def debian(docker_api) -> str:
    try:
        return dockerlab.ensure_debian_image(docker_api)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def lab(docker_api):
    lab = dockerlab.Lab(docker_api)
    yield lab
    lab.cleanup()
