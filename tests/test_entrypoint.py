"""Sharing a pack as a pip package: an installed distribution that declares the `dockdoc.rules`
entry point adds its packs to every command, with no flag and no config.

The package is really built and installed (pip, setuptools, offline: --no-deps, --no-index,
--no-build-isolation) into a directory of its own, then dockdoc runs in a subprocess with that
directory on PYTHONPATH, as it would after `pip install acme-dockdoc-rules`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent / "data" / "entrypoint_pack"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The pack project installed into a fresh directory; returns that directory."""
    work = tmp_path_factory.mktemp("entrypoint")
    source = work / "src"
    # Build from a copy: building writes build/ and *.egg-info next to pyproject.toml.
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
               "--no-build-isolation", "--disable-pip-version-check", "--target", str(target), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        "pip could not build and install tests/data/entrypoint_pack (setuptools older than 70.1 needs the "
        f"'wheel' package to build a wheel):\n{done.stdout}\n{done.stderr}")
    assert (target / "acme_dockdoc_rules" / "acme.yaml").is_file()
    return target


def _dockdoc(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DOCKDOC_RULES"}
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_rules_list_includes_the_installed_pack(installed):
    done = _dockdoc(installed, "rules", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert rows["acme/tier-down"] == {"id": "acme/tier-down", "cause": "acme/tier-down", "severity": "error",
                                      "pack": "acme", "title": "A tiered Acme service is not running"}
    assert "dockdoc/bind-loopback" in rows  # the built-in packs are still there


def test_without_the_package_the_rule_is_absent(tmp_path):
    done = _dockdoc(tmp_path, "rules", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "acme/tier-down" not in {row["id"] for row in json.loads(done.stdout)}


def test_rules_test_on_the_installed_package_directory_passes(installed):
    done = _dockdoc(installed, "rules", "test", str(installed / "acme_dockdoc_rules"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   acme/tier-down (3 examples)" in done.stdout
    assert "1 passed, 0 failed" in done.stdout


def test_the_installed_rule_fires_in_a_scan(installed, tmp_path):
    snapshot = {
        "schema_version": 1, "kind": "dockdoc-snapshot", "collected_at": "2026-11-27T09:00:00+00:00",
        "dockdoc_version": "0.1.0", "host": {},
        "containers": [
            {"id": "a" * 64, "name": "billing", "display_name": "billing", "labels": {"com.acme.tier": "gold"},
             "state": {"status": "exited", "running": False, "exit_code": 3}, "ports": [], "unknown": {}},
            {"id": "b" * 64, "name": "untiered", "display_name": "untiered", "labels": {},
             "state": {"status": "exited", "running": False, "exit_code": 3}, "ports": [], "unknown": {}},
        ],
    }
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot), encoding="utf-8")
    done = _dockdoc(installed, "scan", "--from", str(path), "--format", "json", "--fail-on", "never")
    assert done.returncode == 0, done.stderr
    findings = [f for f in json.loads(done.stdout)["findings"] if f["rule"] == "acme/tier-down"]
    assert [f["container"]["name"] for f in findings] == ["billing"]
    assert findings[0]["message"] == "billing (tier gold) is not running: exited, exit code 3."


def test_a_broken_installed_pack_stops_the_load_with_its_origin(installed, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(installed, broken)
    (broken / "acme_dockdoc_rules" / "acme.yaml").write_text("pack: acme\nrules: []\n", encoding="utf-8")
    done = _dockdoc(broken, "rules", "list")
    assert done.returncode == 2
    assert "acme:acme.yaml" in done.stderr and "'rules' must be a non-empty list" in done.stderr
