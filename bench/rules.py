"""Rule-engine benchmark: the built-in rules over a synthetic snapshot of N containers, in-process.

    python bench/rules.py [--containers 1000] [--repeat 5] [--profile]

The snapshot is built by doctor.collect.docker.container_facts from fake `docker inspect` results,
so its facts have exactly the shape a real scan produces: a realistic mix of healthy web apps,
apps bound to 127.0.0.1, port mismatches, crash loops, OOM kills, unhealthy and exited containers,
each with 2-3 ports, its listeners and 200 access-log lines (werkzeug, gunicorn, nginx, uvicorn).

Prints the median wall time of `evaluate(snapshot, rules)` over the whole snapshot, the time per
container x rule, the findings, and a baseline from the same run: walking every container's log
lines once per rule with a plain `in` check, i.e. touching the data the rules read most, with no
engine at all. Target: the whole snapshot under 1 second.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import datetime as dt
import io
import os
import pstats
import random
import resource
import sys
import time

# Appended, not prepended: PYTHONPATH=<another checkout> then decides which dockdoc is measured.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import median, table  # noqa: E402
from doctor import facts  # noqa: E402
from doctor.collect.docker import container_facts  # noqa: E402
from doctor.engine import packs  # noqa: E402
from doctor.engine.evaluate import evaluate  # noqa: E402

TARGET_SECONDS = 1.0
LOG_LINES = 200
NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)

# kind -> weight (out of 100)
MIX = {
    "web-ok": 40,
    "web-loopback": 10,  # listens on 127.0.0.1, published: bind-loopback
    "port-mismatch": 8,  # -p 8080:5000 but the app listens on 8000
    "published-loopback": 7,  # -p 127.0.0.1:8080:80
    "worker": 5,  # no ports at all
    "exited-error": 8,
    "crash-loop": 5,
    "oom": 5,
    "unhealthy": 5,
    "worker-oom": 4,  # gunicorn worker SIGKILLed, container still up
    "exited-immediately": 3,  # daemonized server, exit 0 after 0.3 s
}

PATHS = ["/", "/api/items", "/api/items/42", "/api/users/7", "/healthz", "/static/app.js", "/login",
         "/api/orders?page=3", "/metrics", "/favicon.ico"]
METHODS = ["GET"] * 8 + ["POST", "PUT", "DELETE"]
STATUSES = [200] * 14 + [201, 204, 301, 304, 400, 401, 404, 500]
AGENTS = ['curl/8.5.0', 'python-requests/2.32.3', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0',
          'kube-probe/1.30', 'Go-http-client/1.1']


def _stamp(second: int) -> dt.datetime:
    return NOW - dt.timedelta(seconds=second)


def access_line(server: str, rng: random.Random, when: dt.datetime) -> str:
    client = f"172.18.0.{rng.randint(1, 40)}"
    method, path, status = rng.choice(METHODS), rng.choice(PATHS), rng.choice(STATUSES)
    size = rng.randint(0, 40000)
    agent = rng.choice(AGENTS)
    if server == "werkzeug":
        return f'{client} - - [{when:%d/%b/%Y %H:%M:%S}] "{method} {path} HTTP/1.1" {status} -'
    if server == "gunicorn":
        return (f'{client} - - [{when:%d/%b/%Y:%H:%M:%S} +0000] "{method} {path} HTTP/1.1" {status} {size} '
                f'"-" "{agent}"')
    if server == "uvicorn":
        return f'INFO:     {client}:{rng.randint(30000, 60000)} - "{method} {path} HTTP/1.1" {status} OK'
    return (f'{client} - - [{when:%d/%b/%Y:%H:%M:%S} +0000] "{method} {path} HTTP/1.1" {status} {size} '
            f'"-" "{agent}" "-"')  # nginx


def start_lines(server: str, port: int, host: str) -> list[str]:
    if server == "werkzeug":
        return [" * Serving Flask app 'app'", " * Debug mode: off",
                "WARNING: This is a development server. Do not use it in a production deployment.",
                f" * Running on http://{host}:{port}", "Press CTRL+C to quit"]
    if server == "gunicorn":
        return ["[2026-11-27 08:00:00 +0000] [1] [INFO] Starting gunicorn 23.0.0",
                f"[2026-11-27 08:00:00 +0000] [1] [INFO] Listening at: http://{host}:{port} (1)",
                "[2026-11-27 08:00:00 +0000] [1] [INFO] Using worker: sync",
                "[2026-11-27 08:00:00 +0000] [7] [INFO] Booting worker with pid: 7",
                "[2026-11-27 08:00:00 +0000] [8] [INFO] Booting worker with pid: 8"]
    if server == "uvicorn":
        return ["INFO:     Started server process [1]", "INFO:     Waiting for application startup.",
                "INFO:     Application startup complete.",
                f"INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)"]
    return ["/docker-entrypoint.sh: Configuration complete; ready for start up",
            "2026/11/27 08:00:00 [notice] 1#1: using the \"epoll\" event method",
            "2026/11/27 08:00:00 [notice] 1#1: nginx/1.27.3",
            "2026/11/27 08:00:00 [notice] 1#1: start worker processes"]


TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/app.py", line 12, in <module>',
    "    db = connect(os.environ['DATABASE_URL'])",
    '  File "/usr/local/lib/python3.12/site-packages/psycopg/connection.py", line 119, in connect',
    "    raise last_ex.with_traceback(None)",
    'psycopg.OperationalError: connection failed: connection to server at "172.18.0.2", port 5432 '
    "failed: Connection refused",
]


def make_logs(kind: str, server: str, port: int, host: str, rng: random.Random) -> dict:
    head = start_lines(server, port, host)
    tail: list[str] = []
    if kind in ("exited-error", "crash-loop"):
        tail = TRACEBACK
    elif kind == "oom":
        tail = ["[2026-11-27 11:59:58 +0000] [7] [INFO] loading model weights (2.1 GiB)"]
    elif kind == "worker-oom":
        tail = ["[2026-11-27 11:59:30 +0000] [1] [ERROR] Worker (pid:8) was sent SIGKILL! Perhaps out of memory?",
                "[2026-11-27 11:59:30 +0000] [21] [INFO] Booting worker with pid: 21"]
    elif kind == "exited-immediately":
        tail = ["AH00558: httpd: Could not reliably determine the server's fully qualified domain name"]
    body = LOG_LINES - len(head) - len(tail)
    lines = head + [access_line(server, rng, _stamp(LOG_LINES - i)) for i in range(body)] + tail
    times = [_stamp(LOG_LINES - i).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randint(0, 999999999):09d}Z"
             for i in range(len(lines))]
    return {"lines": lines, "times": times, "truncated": True}


def _listener(address: str, port: int) -> dict:
    host = f"[{address}]" if ":" in address else address
    return {"address": address, "port": port, "proto": "tcp", "endpoint": f"{host}:{port}"}


def make_container(index: int, kind: str, rng: random.Random) -> dict:
    """One container's facts, via container_facts() on a fake inspect result."""
    server = rng.choice(["werkzeug", "gunicorn", "uvicorn", "nginx"])
    app_port = {"werkzeug": 5000, "gunicorn": 8000, "uvicorn": 8000, "nginx": 80}[server]
    host_port = 8000 + index
    bind_ip = "0.0.0.0"
    listen_host, listen_port = "0.0.0.0", app_port
    running, restarting, oom, exit_code, error = True, False, False, 0, ""
    status = "running"
    restart_count, policy = 0, rng.choice(["no", "unless-stopped", "always"])
    started = NOW - dt.timedelta(hours=rng.randint(1, 400))
    finished = None
    health = None
    published = True
    if kind == "web-loopback":
        listen_host = "127.0.0.1"
    elif kind == "port-mismatch":
        app_port, listen_port = 5000, 8000  # -p 8080:5000, app on 8000
    elif kind == "published-loopback":
        bind_ip = "127.0.0.1"
    elif kind == "worker":
        published = False
    elif kind == "exited-error":
        running, status, exit_code = False, "exited", 1
        finished = started + dt.timedelta(seconds=2.5)
    elif kind == "crash-loop":
        running, restarting, status, exit_code = False, True, "restarting", 1
        restart_count, policy = rng.randint(3, 40), "always"
        started = NOW - dt.timedelta(seconds=5)
        finished = NOW - dt.timedelta(seconds=3)
    elif kind == "oom":
        running, status, exit_code, oom = False, "exited", 137, True
        finished = started + dt.timedelta(minutes=12)
    elif kind == "unhealthy":
        health = {"Status": "unhealthy", "FailingStreak": 4, "Log": [
            {"Start": "2026-11-27T11:59:30.1Z", "ExitCode": 1,
             "Output": f"Connecting to 127.0.0.1:{app_port + 1} (127.0.0.1:{app_port + 1})\n"
                       "wget: can't connect to remote host (127.0.0.1): Connection refused\n"}] * 5}
    elif kind == "exited-immediately":
        running, status, exit_code = False, "exited", 0
        finished = started + dt.timedelta(seconds=0.3)
    if kind == "web-ok" and rng.random() < 0.5:
        health = {"Status": "healthy", "FailingStreak": 0, "Log": [
            {"Start": "2026-11-27T11:59:30.1Z", "ExitCode": 0, "Output": "ok"}] * 5}

    # 2-3 ports: the app's, a metrics port (exposed, not published) and sometimes a loopback debug port.
    exposed = {f"{app_port}/tcp": {}, "9090/tcp": {}}
    requested = {f"{app_port}/tcp": [{"HostIp": "" if bind_ip == "0.0.0.0" else bind_ip,
                                       "HostPort": str(host_port)}]} if published else {}
    live = {f"{app_port}/tcp": [{"HostIp": bind_ip, "HostPort": str(host_port)}]} if published and running else {}
    listeners = None
    if running:
        listeners = [_listener(listen_host, listen_port), _listener("0.0.0.0", 9090)]
        if index % 3 == 0:
            exposed["6060/tcp"] = {}
            listeners.append(_listener("127.0.0.1", 6060))
        listeners.sort(key=lambda l: (l["port"], l["address"]))
        live.update({k: None for k in exposed if k not in live})
    compose = index % 2 == 0
    labels = {"org.opencontainers.image.source": "https://example.com/shop"}
    if compose:
        labels.update({"com.docker.compose.project": "shop", "com.docker.compose.service": f"svc{index}",
                       "com.docker.compose.container-number": "1"})
    container_id = f"{index:08x}" + "ab" * 28
    inspect = {
        "Id": container_id,
        "Name": f"/shop-svc{index}-1" if compose else f"/app{index}",
        "Image": "sha256:" + "cd" * 32,
        "Created": "2026-11-20T10:00:00.000000000Z",
        "RestartCount": restart_count,
        "Config": {
            "Image": f"registry.example.com/shop/{server}-app:1.{index % 7}",
            "Labels": labels,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "DATABASE_URL=postgres://u:secret@db/shop",
                    "PYTHONUNBUFFERED=1"],
            "Cmd": {"werkzeug": ["flask", "run"], "gunicorn": ["gunicorn", "app:app"],
                    "uvicorn": ["uvicorn", "main:app"], "nginx": ["nginx", "-g", "daemon off;"]}[server],
            "Entrypoint": ["/docker-entrypoint.sh"] if server == "nginx" else None,
            "User": "app",
            "ExposedPorts": exposed,
            "Healthcheck": {"Test": ["CMD-SHELL", f"wget -q -O- http://127.0.0.1:{app_port}/healthz"]}
            if health else None,
            "Tty": False,
        },
        "HostConfig": {
            "RestartPolicy": {"Name": policy, "MaximumRetryCount": 0},
            "Memory": 536870912 if kind == "oom" else rng.choice([0, 268435456, 1073741824]),
            "NetworkMode": "shop_default" if compose else "bridge",
            "PortBindings": requested,
            "ReadonlyRootfs": False,
        },
        "State": {
            "Status": status, "Running": running, "Restarting": restarting, "Paused": False,
            "OOMKilled": oom, "Dead": False, "Pid": 10000 + index if running else 0,
            "ExitCode": exit_code, "Error": error,
            "StartedAt": started.strftime("%Y-%m-%dT%H:%M:%S.123456789Z"),
            "FinishedAt": finished.strftime("%Y-%m-%dT%H:%M:%S.123456789Z") if finished
            else "0001-01-01T00:00:00Z",
            "Health": health,
        },
        "NetworkSettings": {
            "Ports": live,
            "Networks": {("shop_default" if compose else "bridge"): {
                "IPAddress": f"172.18.{index // 250}.{index % 250 + 2}" if running else "",
                "Aliases": [f"svc{index}"] if compose else None}},
        },
    }
    logs = make_logs(kind, server, listen_port, listen_host, rng)
    listeners_source = f"/proc/{10000 + index}/net/tcp" if running else "unavailable: container is not running"
    return container_facts(inspect, logs, "docker logs", listeners, listeners_source, NOW)


def build_snapshot(count: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]
    containers = [make_container(i, kinds[i % len(kinds)], rng) for i in range(count)]
    host = {"daemon": {"url": "unix socket", "local": True, "version": "27.3.1", "api_version": "1.47",
                       "os": "linux", "arch": "x86_64", "platform": "Docker Engine - Community"},
            "port_owners": {}}
    return facts.validate_snapshot(facts.new_snapshot(host, containers))


def walk_logs(snapshot: dict, rules: list) -> int:
    """The baseline: every log line of every container, once per rule, one `in` check each."""
    hits = 0
    for _rule in rules:
        for container in snapshot["containers"]:
            logs = container.get("logs")
            if not logs:
                continue
            for line in logs["lines"]:
                if "Address already in use" in line:
                    hits += 1
    return hits


def timed(fn, repeat: int):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return times, value


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=1000, help="containers in the snapshot (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one evaluation and print the top")
    args = parser.parse_args(argv)

    rss_start = rss_mb()
    started = time.perf_counter()
    snapshot = build_snapshot(args.containers)
    build_seconds = time.perf_counter() - started
    rss_snapshot = rss_mb()
    rules = packs.all_rules(packs.load_all())
    containers = snapshot["containers"]
    lines = sum(len(c["logs"]["lines"]) for c in containers if c.get("logs"))
    ports = sum(len(c["ports"]) for c in containers)

    engine_times, result = timed(lambda: evaluate(snapshot, rules), args.repeat)
    baseline_times, _ = timed(lambda: walk_logs(snapshot, rules), args.repeat)
    rss_end = rss_mb()

    engine, baseline = median(engine_times), median(baseline_times)
    pairs = len(containers) * len(rules)
    per_pair_us = engine / pairs * 1e6
    severities = collections.Counter(f["severity"] for f in result.findings)
    by_rule = collections.Counter(f["rule"] for f in result.findings)

    print(f"dockdoc from {os.path.dirname(os.path.dirname(facts.__file__))}")
    print(f"snapshot: {len(containers)} containers, {ports} ports, {lines} log lines "
          f"(built in {build_seconds:.2f}s); {len(rules)} rules; {args.repeat} runs each")
    print(table(["measure", "median s", "min s", "max s"], [
        ["evaluate(snapshot, rules)", engine, min(engine_times), max(engine_times)],
        ["baseline: walk logs once per rule", baseline, min(baseline_times), max(baseline_times)],
    ]))
    print()
    print(f"per container x rule: {per_pair_us:.1f} us ({pairs} pairs)")
    print(f"engine / baseline: {engine / baseline:.2f}")
    print(f"findings: {len(result.findings)} ({', '.join(f'{k} {v}' for k, v in sorted(severities.items()))}); "
          f"unknown checks: {len(result.unknown)}")
    print("findings by rule: " + ", ".join(f"{rule.split('/', 1)[1]} {n}" for rule, n in by_rule.most_common()))
    print(f"peak RSS: {rss_end:.1f} MB (at start {rss_start:.1f}, after building the snapshot {rss_snapshot:.1f})")
    verdict = "within target" if engine < TARGET_SECONDS else "OVER TARGET"
    print(f"\nwhole snapshot {engine:.3f}s (target < {TARGET_SECONDS:.0f} s): {verdict}")
    print(f"rules_seconds={engine:.3f} per_container_rule_us={per_pair_us:.1f} baseline_seconds={baseline:.3f} "
          f"ratio={engine / baseline:.2f} findings={len(result.findings)} peak_rss_mb={rss_end:.1f}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        evaluate(snapshot, rules)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
        stats.print_stats(20)
        print("\n--- cProfile of one evaluate(), by own time ---")
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
