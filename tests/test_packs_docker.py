"""A team's pack on real containers, through every way of adding it: --rules, DOCKDOC_RULES, the
config file and an installed entry point; and silencing on real containers (config ignore with
expiry, the dockdoc.ignore label)."""

from __future__ import annotations

import json
import os

import pytest

from tests import dockerlab
from tests.test_entrypoint import installed  # noqa: F401 - the fixture: the sample pack pip-installed

ACME_WEB = str(dockerlab.HERE / "data" / "packs" / "acme-web.yaml")


@pytest.fixture(scope="module")
def acme(docker_api, busybox):
    """A Node-style inspector port published to every interface, and a stopped tiered service."""
    lab = dockerlab.Lab(docker_api)
    try:
        inspector = lab.run(busybox, ["httpd", "-f", "-p", "9229"], name="acme-inspector",
                            ports={9229: dockerlab.free_port()})
        tier = lab.run(busybox, ["sh", "-c", "exit 3"], name="acme-tier", labels={"com.acme.tier": "web"})
        lab.wait_listening(inspector, 9229)
        lab.wait_for(tier, lambda i: i["State"]["Status"] == "exited")
        yield {"inspector": inspector, "tier": tier}
    finally:
        lab.cleanup()


def _rules(result) -> set:
    assert result.returncode in (0, 1), result.stderr
    return {(f["container"]["name"], f["rule"]) for f in json.loads(result.stdout)["findings"]}


def _scan(*args, cwd=None, env=None):
    env = {"XDG_CONFIG_HOME": str(cwd or "/nonexistent"), **(env or {})}
    command = ["scan", "--format", "json", *args]
    if cwd is None:
        return dockerlab.dockdoc(*command, env=env)
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "doctor", *command], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env}, timeout=120)


def test_pack_fires_through_rules_flag(acme):
    assert (acme["inspector"], "acme-web/inspector-published") in _rules(_scan("--rules", ACME_WEB, acme["inspector"]))
    assert not any(r.startswith("acme-web/") for _, r in _rules(_scan(acme["inspector"])))


def test_pack_fires_through_environment(acme):
    found = _rules(_scan(acme["inspector"], env={"DOCKDOC_RULES": ACME_WEB}))
    assert (acme["inspector"], "acme-web/inspector-published") in found


def test_pack_fires_through_config_file(acme, tmp_path):
    (tmp_path / "dockdoc.yaml").write_text(f"packs: [{ACME_WEB}]\n")
    found = _rules(_scan(acme["inspector"], cwd=tmp_path))
    assert (acme["inspector"], "acme-web/inspector-published") in found


def test_pack_fires_through_installed_entry_point(acme, installed):  # noqa: F811
    found = _rules(_scan(acme["tier"], env={"PYTHONPATH": str(installed)}))
    assert (acme["tier"], "acme/tier-down") in found
    assert (acme["tier"], "acme/tier-down") not in _rules(_scan(acme["tier"]))


def test_config_disable_severity_and_ignore_with_expiry(acme, tmp_path):
    name = acme["tier"]
    (tmp_path / "dockdoc.yaml").write_text(
        "severity: {dockdoc/exit-error: warning}\n"
        "ignore:\n"
        f"  - {{rule: exit-error, container: '{name[:-2]}*', reason: known flaky job, until: 2999-01-01}}\n")
    result = _scan("--show-suppressed", name, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["findings"] == []
    assert report["summary"]["suppressed"] == 1
    assert report["suppressed"][0]["severity"] == "warning"  # the override applied before silencing
    assert "known flaky job" in report["suppressed"][0]["suppressed_by"]

    (tmp_path / "dockdoc.yaml").write_text(
        "ignore:\n  - {rule: dockdoc/exit-error, container: '*', reason: old, until: 2020-01-01}\n")
    result = _scan(name, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and {f["rule"] for f in report["findings"]} == {"dockdoc/exit-error"}
    assert any("expired" in n and "2020-01-01" in n for n in report["notices"])

    (tmp_path / "dockdoc.yaml").write_text("disable: [exit-error]\n")
    assert _rules(_scan(name, cwd=tmp_path)) == set()


def test_label_ignore_on_a_real_container(lab, busybox):
    name = lab.run(busybox, ["sh", "-c", "exit 4"], name="labelled",
                   labels={"dockdoc.ignore": "dockdoc/exit-error"})
    lab.wait_for(name, lambda i: i["State"]["Status"] == "exited")
    result = _scan(name)
    assert result.returncode == 0 and json.loads(result.stdout)["summary"]["suppressed"] == 1
    unsilenced = _scan("--no-label-ignores", name)
    assert unsilenced.returncode == 1 and _rules(unsilenced) == {(name, "dockdoc/exit-error")}
