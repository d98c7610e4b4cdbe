"""`dockdoc watch` end to end: the real CLI in a child process, real containers, a real HTTP
receiver on 127.0.0.1, and for the daemon-restart test a second, private dockerd of our own (the
shared one is never restarted). Waits are generous "within N seconds"; nothing asserts speed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

import docker
import pytest

from doctor import report
from doctor.collect import docker as collector
from doctor.engine import evaluate as engine
from doctor.engine import packs
from doctor.watch_cli import post_report
from tests import dockerlab
from tests.test_webhook import Receiver, free_port



def dockdoc(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=dockerlab.REPO)


class Watch:
    """`dockdoc watch` running in the background, its log in a file."""

    def __init__(self, tmp_path, *args, env=None):
        Watch.count = getattr(Watch, "count", 0) + 1
        self.log_path = tmp_path / f"watch-{Watch.count}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "doctor", "watch", *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     cwd=dockerlab.REPO)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in the watch log within {timeout}s:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


@pytest.fixture
def watches():
    started = []

    def start(tmp_path, *args, env=None):
        watch = Watch(tmp_path, *args, env=env)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.kill()


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def about(name):
    """A predicate for the receiver: POSTs about this container."""
    return lambda r: r["json"] and (r["json"]["finding"]["container"] or {}).get("name") == name


def args_for(tmp_path, tag, *extra):
    return (f"dockdoc-test-{dockerlab.RUN_ID}-{tag}-*", "--state", str(tmp_path / "state.db"), "--interval", "1h",
            "--debounce", "200ms", "--retry-max", "1s", "--log-format", "json", *extra)


def assert_store_consistent(path):
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE lease_until IS NOT NULL").fetchone()[0] == 0
        counts = dict(db.execute("SELECT event, COUNT(*) FROM history GROUP BY event").fetchall())
        queued = dict(db.execute("SELECT event, COUNT(*) FROM outbox GROUP BY event").fetchall())
    return counts, queued


def test_crash_is_posted_once_and_resolved_once(tmp_path, lab, busybox, receiver, watches):
    metrics_port = free_port()
    watch = watches(tmp_path, *args_for(tmp_path, "crash", "--post", receiver.url("/hook/secret-path"),
                                        "--metrics-addr", f"127.0.0.1:{metrics_port}"))
    watch.wait_log("full scan")
    name = lab.run(busybox, ["sh", "-c", "echo 'fatal: cannot open /data/db'; exit 3"], name="crash-app")

    [new] = receiver.wait_for(about(name), timeout=30)
    body = new["json"]
    assert body["event"] == "new" and body["finding"]["cause"] == "exit-error"
    assert "exited with code 3" in body["finding"]["message"]
    assert any("fatal: cannot open /data/db" in line for line in body["finding"]["evidence"])

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'dockdoc_findings{cause="exit-error",severity="error"} 1.0' in metrics
    assert "dockdoc_docker_connected 1.0" in metrics
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ok"

    lab.api.remove_container(name, force=True)  # fixed: the container is gone
    receiver.wait_for(about(name), count=2, timeout=30)
    time.sleep(2)  # and nothing more arrives
    events = [r["json"]["event"] for r in receiver.posts(about(name))]
    assert events == ["new", "resolved"]
    assert receiver.posts(about(name))[1]["json"]["fingerprint"] == body["fingerprint"]

    assert watch.terminate() == 0
    counts, queued = assert_store_consistent(tmp_path / "state.db")
    assert counts == {"new": 1, "resolved": 1} and queued == {"new": 1, "resolved": 1}
    assert "secret-path" not in watch.log()

    history = dockdoc("history", "--state", str(tmp_path / "state.db"))
    assert history.returncode == 0, history.stderr
    assert "exit-error" in history.stdout and "resolved" in history.stdout


def test_unhealthy_then_healthy(tmp_path, docker_api, busybox, lab, receiver, watches):
    watch = watches(tmp_path, *args_for(tmp_path, "health", "--post", receiver.url()))
    watch.wait_log("full scan")
    name = f"dockdoc-test-{dockerlab.RUN_ID}-health-app"
    container = docker_api.create_container(
        busybox, ["sleep", "300"], name=name, labels={dockerlab.LABEL: dockerlab.RUN_ID},
        healthcheck={"test": ["CMD", "test", "-f", "/tmp/ready"], "interval": 500_000_000,
                     "timeout": 1_000_000_000, "retries": 1})
    lab.created.append(container["Id"])
    docker_api.start(container["Id"])

    [new] = receiver.wait_for(about(name), timeout=30)
    assert new["json"]["event"] == "new" and new["json"]["finding"]["cause"] == "unhealthy"
    exec_id = docker_api.exec_create(container["Id"], ["touch", "/tmp/ready"])
    docker_api.exec_start(exec_id)
    posts = receiver.wait_for(about(name), count=2, timeout=30)
    assert [p["json"]["event"] for p in posts] == ["new", "resolved"]


def test_crash_loop_is_one_message_not_fifty(tmp_path, lab, busybox, receiver, watches):
    watch = watches(tmp_path, *args_for(tmp_path, "loop", "--post", receiver.url()))
    watch.wait_log("full scan")
    name = lab.run(busybox, ["sh", "-c", "echo boom; exit 1"], name="loop-app", restart_policy={"Name": "always"})
    posts = receiver.wait_for(lambda r: about(name)(r) and r["json"]["finding"]["cause"] == "crash-loop",
                              timeout=60)
    lab.wait_for(name, lambda info: info["RestartCount"] >= 5, timeout=60, what="five restarts")
    time.sleep(2)
    posts = receiver.posts(about(name))
    by_fingerprint: dict = {}
    for post in posts:
        by_fingerprint.setdefault(post["json"]["fingerprint"], []).append(post["json"]["event"])
    crash_loop = [p for p in posts if p["json"]["finding"]["cause"] == "crash-loop"]
    assert [p["json"]["event"] for p in crash_loop] == ["new"]
    assert all(events == ["new"] for events in by_fingerprint.values()), by_fingerprint
    assert watch.log().count('"event": "new"') >= 1


def test_receiver_down_then_delivered_exactly_once(tmp_path, lab, busybox, watches):
    port = free_port()  # nobody listens yet
    watch = watches(tmp_path, *args_for(tmp_path, "down", "--post", f"http://127.0.0.1:{port}/hook"))
    watch.wait_log("full scan")
    name = lab.run(busybox, ["sh", "-c", "exit 4"], name="down-app")
    watch.wait_log("retrying with backoff", timeout=30)
    time.sleep(3)  # a few more refused attempts
    assert watch.log().count("retrying with backoff") == 1  # said once per outage, not per retry
    waiting = dockdoc("history", "--outbox", "--format", "json", "--state", str(tmp_path / "state.db"))
    assert waiting.returncode == 0, waiting.stderr
    rows = json.loads(waiting.stdout)
    assert len(rows) == 1, rows
    [row] = rows
    assert row["status"] == "pending" and row["attempts"] >= 2 and "refused" in row["last_error"].lower()
    assert str(port) in row["sink_label"] and "/hook" not in row["sink_label"]
    receiver = Receiver(port=port).start()
    try:
        receiver.wait_for(about(name), timeout=30)
        time.sleep(3)
        posts = receiver.posts(about(name))
        assert [p["json"]["event"] for p in posts] == ["new"]
        watch.wait_log("delivering again")
    finally:
        receiver.stop()
    assert watch.terminate() == 0


def test_killed_with_undelivered_outbox_then_restarted(tmp_path, lab, busybox, watches):
    port = free_port()
    args = args_for(tmp_path, "kill", "--post", f"http://127.0.0.1:{port}/hook")
    first = watches(tmp_path, *args)
    first.wait_log("full scan")
    name = lab.run(busybox, ["sh", "-c", "exit 5"], name="kill-app")
    first.wait_log("retrying with backoff", timeout=30)
    first.proc.kill()  # SIGKILL: no chance to flush anything
    first.proc.wait(30)

    receiver = Receiver(port=port).start()
    try:
        second = watches(tmp_path, *args)
        receiver.wait_for(about(name), timeout=30)
        second.wait_log("full scan")
        time.sleep(2)
        posts = receiver.posts(about(name))
        assert [p["json"]["event"] for p in posts] == ["new"]  # delivered, and not announced again
        assert second.terminate() == 0
    finally:
        receiver.stop()
    counts, _ = assert_store_consistent(tmp_path / "state.db")
    assert counts == {"new": 1}


def test_sigterm_finishes_the_delivery_in_flight(tmp_path, lab, busybox, watches):
    receiver = Receiver(script=lambda index, request: (200, {}, 3)).start()  # acknowledges after 3s
    try:
        watch = watches(tmp_path, *args_for(tmp_path, "term", "--post", receiver.url()))
        watch.wait_log("full scan")
        name = lab.run(busybox, ["sh", "-c", "exit 6"], name="term-app")
        receiver.wait_for(about(name), timeout=30)  # the POST is in flight now
        assert watch.terminate() == 0
        assert "delivered new" in watch.log()
        _, _ = assert_store_consistent(tmp_path / "state.db")
        with sqlite3.connect(tmp_path / "state.db") as db:
            assert db.execute("SELECT status FROM outbox").fetchall() == [("delivered",)]
        assert len(receiver.posts(about(name))) == 1
    finally:
        receiver.stop()


def test_sigterm_in_once_mode_finishes_the_delivery_in_flight(tmp_path, lab, busybox, watches):
    # `systemctl stop` on the timer's oneshot unit while it posts: no half-done delivery, exit 0.
    receiver = Receiver(script=lambda index, request: (200, {}, 3)).start()  # acknowledges after 3s
    try:
        name = lab.run(busybox, ["sh", "-c", "exit 6"], name="onceterm-app")
        lab.wait_for(name, lambda info: not info["State"]["Running"], what="exit")
        watch = watches(tmp_path, *args_for(tmp_path, "onceterm", "--once", "--post", receiver.url()))
        receiver.wait_for(about(name), timeout=30)  # the POST is in flight now
        assert watch.terminate() == 0, watch.log()[-2000:]
        _, _ = assert_store_consistent(tmp_path / "state.db")
        with sqlite3.connect(tmp_path / "state.db") as db:
            assert db.execute("SELECT status FROM outbox").fetchall() == [("delivered",)]
        assert len(receiver.posts(about(name))) == 1
    finally:
        receiver.stop()


def test_once_mode_for_cron(tmp_path, lab, busybox, receiver):
    args = args_for(tmp_path, "once", "--once", "--post", receiver.url())
    name = lab.run(busybox, ["sh", "-c", "exit 7"], name="once-app")
    lab.wait_for(name, lambda info: not info["State"]["Running"], what="exit")
    first = dockdoc("watch", *args)
    assert first.returncode == 0, first.stderr
    assert [p["json"]["event"] for p in receiver.posts(about(name))] == ["new"]
    again = dockdoc("watch", *args)
    assert again.returncode == 0, again.stderr
    assert len(receiver.posts(about(name))) == 1  # ongoing: not posted again
    lab.api.remove_container(name, force=True)
    third = dockdoc("watch", *args)
    assert third.returncode == 0, third.stderr
    assert [p["json"]["event"] for p in receiver.posts(about(name))] == ["new", "resolved"]


def test_post_report_for_scan_post(tmp_path, docker_api, lab, busybox, receiver):
    name = lab.run(busybox, ["sh", "-c", "exit 8"], name="report-app")
    lab.wait_for(name, lambda info: not info["State"]["Running"], what="exit")
    rules = packs.all_rules(packs.load_all())

    def scan():
        snapshot = collector.collect(docker_api, [name])
        result = engine.evaluate(snapshot, rules)
        return report.build(snapshot, result.findings, result.unknown), result.unknown

    document, unknown = scan()
    state = str(tmp_path / "state.db")
    assert post_report(document, [receiver.url()], state, unknown=unknown) == 0
    assert [p["json"]["event"] for p in receiver.posts(about(name))] == ["new"]
    document, unknown = scan()
    assert post_report(document, [receiver.url()], state, unknown=unknown) == 0
    assert len(receiver.posts(about(name))) == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ("watch", "--post", "ftp://example.test/T0/SECRET", "--state", str(tmp_path / "s.db")),
        ("watch", "--post", "not a url", "--state", str(tmp_path / "s.db")),
        ("watch", "--state", str(blocker / "state.db")),
        ("watch", "--interval", "5 minutes", "--state", str(tmp_path / "s.db")),
        ("watch", "--metrics-addr", "nonsense", "--state", str(tmp_path / "s.db")),
        ("history", "--state", str(tmp_path / "missing.db")),
    ]
    for args in cases:
        result = dockdoc(*args, timeout=60)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dockdoc: error:"), (args, result.stderr)
        assert "SECRET" not in result.stderr and "Traceback" not in result.stderr


# ---- the Docker daemon goes away and comes back -----------------------------------------------

class PrivateDockerd:
    """A dockerd of this test's own: own data root, exec root and socket, and its own network
    namespace (`unshare --net`), with --live-restore so that its containers keep running, and can
    crash, while it is down.

    The network namespace matters: a dockerd started with `--bridge none` deletes the host's
    `docker0` at start-up (moby's initNetworkController: removeDefaultBridgeInterface), which would
    cut every container of the shared daemon off its network. In a namespace of its own it sees
    no docker0, and touches no host interface or iptables rule at all."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="/tmp/dockdoc-dd-")  # short: socket paths are limited
        self.host = f"unix://{self.root}/d.sock"
        self.proc = None
        self.log = open(os.path.join(self.root, "dockerd.log"), "ab")

    def start(self) -> docker.APIClient:
        if not shutil.which("dockerd"):
            pytest.fail("this test needs the dockerd binary to run a private daemon", pytrace=False)
        if not shutil.which("unshare"):
            pytest.fail("this test needs unshare (util-linux) to give the private dockerd its own network",
                        pytrace=False)
        self.proc = subprocess.Popen(
            ["unshare", "--net", "dockerd", "--data-root", f"{self.root}/data", "--exec-root", f"{self.root}/exec",
             "--pidfile", f"{self.root}/d.pid", "-H", self.host, "--bridge", "none", "--iptables=false",
             "--ip-forward=false", "--ip-masq=false", "--live-restore", "--log-level", "warn"], stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                api = docker.APIClient(base_url=self.host, timeout=30)
                api.ping()
                return api
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        pytest.fail(f"the private dockerd did not start; see {self.root}/dockerd.log", pytrace=False)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def cleanup(self) -> None:
        try:
            if self.proc and self.proc.poll() is None:
                api = docker.APIClient(base_url=self.host, timeout=30)
                for summary in api.containers(all=True):
                    api.remove_container(summary["Id"], force=True)
        finally:
            self.stop()
            self.log.close()
            # dockerd bind-mounts its data root onto itself; take down what is left under our root only.
            for _ in range(5):  # a restarted dockerd stacks a second bind mount on the first
                with open("/proc/self/mounts") as mounts:
                    ours = [line.split()[1] for line in mounts if line.split()[1].startswith(self.root + "/")]
                if not ours:
                    break
                for mountpoint in sorted(ours, key=len, reverse=True):
                    subprocess.run(["umount", mountpoint], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_dockerd():
    daemon = PrivateDockerd()
    yield daemon
    daemon.cleanup()


def test_watch_survives_a_daemon_restart_and_reports_a_crash_during_the_outage(tmp_path, private_dockerd,
                                                                               receiver, watches):
    api = private_dockerd.start()
    image = dockerlab.ensure_busybox_image(api)
    env = {"DOCKER_HOST": private_dockerd.host}
    watch = watches(tmp_path, *args_for(tmp_path, "outage", "--post", receiver.url()), env=env)
    watch.wait_log("full scan")
    lab = dockerlab.Lab(api)
    name = lab.run(image, ["sh", "-c", "sleep 4; exit 9"], name="outage-app", network_mode="none")
    private_dockerd.stop()  # the container goes on running (live-restore) and crashes meanwhile
    watch.wait_log("lost the Docker daemon", timeout=30)
    time.sleep(6)
    api = private_dockerd.start()
    assert api.inspect_container(name)["State"]["ExitCode"] == 9  # it did crash while the daemon was away

    [post] = receiver.wait_for(about(name), timeout=90)
    assert post["json"]["event"] == "new" and "exited with code 9" in post["json"]["finding"]["message"]
    watch.wait_log("is back after")
    assert watch.log().count("lost the Docker daemon") == 1  # the outage is logged once
    assert watch.terminate() == 0


# ---- the Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_builds_on_a_locally_imported_base_and_watches(tmp_path, docker_api, debian, lab, busybox,
                                                                    receiver):
    """No registry: the base is the Debian image built with `docker import`, the wheels come from a
    wheelhouse in the build context (the way docs/watch.md says to build it offline)."""
    context = tmp_path / "context"
    shutil.copytree(dockerlab.REPO, context, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".benchmarks", ".venv", "build", "dist", "wheelhouse"))
    wheels = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(context / "wheelhouse"),
                             str(context)], capture_output=True, text=True, timeout=900)
    assert wheels.returncode == 0, wheels.stderr[-2000:]
    tag = f"dockdoc-test/watch-image:{dockerlab.RUN_ID}"
    before = set(docker_api.images(all=True, quiet=True))
    errors = []
    for chunk in docker_api.build(path=str(context), tag=tag, buildargs={"BASE_IMAGE": debian}, rm=True,
                                  forcerm=True, decode=True):
        if "error" in chunk:
            errors.append(chunk["error"])
    try:
        assert not errors, errors
        name = lab.run(busybox, ["sh", "-c", "exit 3"], name="image-crash", network_mode="none")
        lab.wait_for(name, lambda info: not info["State"]["Running"], what="exit")
        watcher = lab.run(
            tag, [f"dockdoc-test-{dockerlab.RUN_ID}-image-crash", "--once", "--post", receiver.url()],
            name="image-watch", network_mode="host", pid_mode="host",
            binds={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "ro"}})
        info = lab.wait_for(watcher, lambda i: not i["State"]["Running"], timeout=120, what="the watch to exit")
        logs = docker_api.logs(watcher).decode(errors="replace")
        assert info["State"]["ExitCode"] == 0, logs
        [post] = receiver.posts(about(name))
        assert post["json"]["event"] == "new" and post["json"]["finding"]["cause"] == "exit-error"
    finally:
        lab.cleanup()
        lab.created.clear()
        # The tag, then what this build left untagged (the build stage of the multi-stage
        # Dockerfile): images that did not exist before it. Never the base image.
        built = set(docker_api.images(all=True, quiet=True)) - before
        try:
            docker_api.remove_image(tag, force=True, noprune=False)
        except docker.errors.APIError:
            pass
        for image in built:
            try:
                if not (docker_api.inspect_image(image).get("RepoTags") or []):
                    docker_api.remove_image(image, force=False, noprune=False)
            except docker.errors.APIError:
                pass  # already gone with the tag, or in use
