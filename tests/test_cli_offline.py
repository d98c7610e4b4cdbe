"""The real `dockdoc` command in a child process, as a user runs it, with no Docker daemon involved.

Every command runs with DOCKER_HOST pointing at a socket that does not exist, in an empty working
directory and config home, so neither a daemon nor a user's dockdoc.yaml can change the answer.
The commands are independent, so they run concurrently once per module; each test reads its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from doctor import __version__
from tests.snapshots import container, healthy, loopback, mixed_snapshot, port, private, snapshot, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"
NO_DOCKER = "unix:///nonexistent-dockdoc-test.sock"


def _dockdoc(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """tests/dockerlab.dockdoc(), with a working directory and a clean environment of our own."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKDOC_", "DOCKER_"))}
    full_env.update({"XDG_CONFIG_HOME": str(cwd / "config-home"), "NO_COLOR": "1", "DOCKER_HOST": NO_DOCKER})
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=120)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    write_json(work / "mixed.json", mixed_snapshot())  # error + warning + info findings
    write_json(work / "quiet.json", snapshot(healthy("ok"), private("db")))  # one info finding
    future = mixed_snapshot()
    future["schema_version"] += 1
    write_json(work / "future.json", future)
    debugger = container("api", listeners=["0.0.0.0:9229"], ports=[port(9229, published="0.0.0.0:9229")])
    write_json(work / "debug.json", snapshot(debugger, healthy("ok")))
    (work / "broken.json").write_text('{"schema_version": 1,\n "kind": "dockdoc-snapshot",\n "host": {\n')
    bad_one = work / "one-error.yaml"
    bad_one.write_text((DATA / "good_pack.yaml").read_text().replace("severity: warning", "severity: loud"))

    commands = {
        "version": ["--version"],
        "scan-default": ["scan", "--from", "mixed.json"],
        "quiet-default": ["scan", "--from", "quiet.json"],
        "quiet-warning": ["scan", "--from", "quiet.json", "--fail-on", "warning"],
        "quiet-info": ["scan", "--from", "quiet.json", "--fail-on", "info"],
        "json": ["scan", "--from", "mixed.json", "--format", "json", "--fail-on", "never"],
        "json-min-error": ["scan", "--from", "mixed.json", "--format", "json", "--min-severity", "error"],
        "select": ["scan", "--from", "mixed.json", "--format", "json", "--fail-on", "never", "db"],
        "select-nothing": ["scan", "--from", "mixed.json", "nosuch*"],
        "with-pack": ["scan", "--from", "debug.json", "--format", "json", "--fail-on", "warning",
                      "--rules", str(DATA / "good_pack.yaml")],
        "broken-snapshot": ["scan", "--from", "broken.json"],
        "future-snapshot": ["scan", "--from", "future.json"],
        "no-socket": ["scan"],
        "bad-scheme": ["scan"],
        "validate-good": ["rules", "validate", str(DATA / "good_pack.yaml")],
        "validate-bad": ["rules", "validate", str(DATA / "good_pack.yaml"), str(DATA / "bad_pack.yaml")],
        "test-builtin": ["rules", "test", str(REPO / "rules")],
        "test-failing": ["rules", "test", str(DATA / "good_pack.yaml"), str(DATA / "failing_example_pack.yaml")],
        "broken-rules-docker": ["scan", "--rules", str(bad_one)],
        "broken-rules-from": ["scan", "--from", "mixed.json", "--rules", str(DATA / "bad_pack.yaml")],
    }
    envs = {"bad-scheme": {"DOCKER_HOST": "foo://bar"}}
    with ThreadPoolExecutor(max_workers=min(12, (os.cpu_count() or 2) * 2)) as pool:
        futures = {name: pool.submit(_dockdoc, args, work, envs.get(name, {})) for name, args in commands.items()}
        results = {name: future.result() for name, future in futures.items()}
    results["_bad_one"] = bad_one
    return results


def _one_error_line(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dockdoc: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""
    return lines[0]


def test_version(cli):
    result = cli["version"]
    assert (result.returncode, result.stdout, result.stderr) == (0, f"dockdoc {__version__}\n", "")


@pytest.mark.parametrize("name,code", [
    ("scan-default", 1),   # an error finding, --fail-on error (the default)
    ("json", 0),           # the same findings, --fail-on never
    ("quiet-default", 0),  # only an info finding
    ("quiet-warning", 0),
    ("quiet-info", 1),
    ("with-pack", 1),      # a warning from the extra pack, --fail-on warning
])
def test_exit_code_follows_fail_on(cli, name, code):
    result = cli[name]
    assert result.returncode == code, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip()


def test_table_from_snapshot(cli):
    out = cli["scan-default"].stdout
    assert "dockdoc/bind-loopback" in out and "dockdoc/killed" in out and "dockdoc/published-loopback-only" in out
    assert out.index("dockdoc/bind-loopback") < out.index("dockdoc/killed") < out.index("published-loopback-only")
    assert out.rstrip().splitlines()[-1] == "4 containers checked: 1 error, 1 warning, 1 info"
    assert "\x1b[" not in out
    quiet = cli["quiet-default"].stdout
    assert quiet.rstrip().splitlines()[-1] == "2 containers checked: 1 info"


def test_json_from_snapshot(cli):
    result = cli["json"]
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["source"] == "snapshot:mixed.json"
    assert [c["name"] for c in document["containers"]] == ["ok", "web", "db", "job"]
    assert [(f["container"]["name"], f["rule"], f["severity"]) for f in document["findings"]] == [
        ("web", "dockdoc/bind-loopback", "error"),
        ("job", "dockdoc/killed", "warning"),
        ("db", "dockdoc/published-loopback-only", "info"),
    ]
    web = loopback()
    assert document["findings"][0]["container"] == {"id": web["id"], "name": "web"}
    assert document["summary"]["findings"] == {"info": 1, "warning": 1, "error": 1}


def test_min_severity_error(cli):
    result = cli["json-min-error"]
    assert result.returncode == 1  # --fail-on error, and there is an error
    document = json.loads(result.stdout)
    assert [f["rule"] for f in document["findings"]] == ["dockdoc/bind-loopback"]
    assert document["summary"]["hidden_below_min_severity"] == 2
    assert document["summary"]["findings"] == {"info": 0, "warning": 0, "error": 1}


def test_select_containers_from_snapshot(cli):
    document = json.loads(cli["select"].stdout)
    assert [c["name"] for c in document["containers"]] == ["db"]
    assert [f["rule"] for f in document["findings"]] == ["dockdoc/published-loopback-only"]


def test_select_nothing_is_an_error(cli):
    _one_error_line(cli["select-nothing"], "no container matches 'nosuch*'")


def test_extra_pack_from_rules_option(cli):
    result = cli["with-pack"]
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert [(f["container"]["name"], f["rule"], f["severity"]) for f in document["findings"]] == [
        ("api", "acme/debug-port-published", "warning")]
    assert document["findings"][0]["message"] == "api: debugger port 9229 is published on 0.0.0.0"


def test_broken_snapshot(cli):
    line = _one_error_line(cli["broken-snapshot"], "broken.json:")
    assert "not valid JSON" in line


def test_newer_snapshot(cli):
    _one_error_line(cli["future-snapshot"], "future.json", "newer than this dockdoc understands")


def test_no_daemon_socket(cli):
    _one_error_line(cli["no-socket"], NO_DOCKER, "does not exist", "is the daemon running?")


def test_bad_docker_host_scheme(cli):
    _one_error_line(cli["bad-scheme"], "invalid DOCKER_HOST 'foo://bar'")


def test_rules_validate(cli):
    good = cli["validate-good"]
    assert (good.returncode, good.stdout, good.stderr) == (0, "ok: 2 rules valid\n", "")
    bad = cli["validate-bad"]
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.splitlines()
    bad_path = str(DATA / "bad_pack.yaml")
    text = (DATA / "bad_pack.yaml").read_text().splitlines()
    marked = {i for i, line in enumerate(text, 1) if "# <- error:" in line}
    assert len(lines) == len(marked) == 8
    assert {int(line[len(bad_path) + 1:].split(":")[0]) for line in lines} == marked
    assert all(line.startswith(bad_path + ":") for line in lines)


def test_rules_test_builtin(cli):
    result = cli["test-builtin"]
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok   dockdoc/bind-loopback (") for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)
    passed = int(lines[-1].split()[0])
    assert lines[-1] == f"{passed} passed, 0 failed" and passed >= 20


def test_rules_test_failing_example(cli):
    result = cli["test-failing"]
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "FAIL acme/oom (2 examples)" in lines
    assert "     examples.match[0] did not match" in lines
    assert "ok   acme/missing-secret (2 examples)" in lines
    assert lines[-1] == "2 passed, 1 failed"


def test_broken_pack_fails_before_docker(cli):
    bad_one = cli["_bad_one"]
    line = _one_error_line(cli["broken-rules-docker"], f"{bad_one}:", "severity: must be one of")
    assert NO_DOCKER not in line and "daemon" not in line  # the pack, not the daemon


def test_broken_pack_lists_every_error(cli):
    result = cli["broken-rules-from"]
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("dockdoc: error: ") and "(and 7 more)" in lines[0]
    assert len(lines) == 8 and all(line.startswith("  ") for line in lines[1:])
    assert all(str(DATA / "bad_pack.yaml") + ":" in line for line in lines)
