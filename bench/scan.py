"""End-to-end scan benchmark: `dockdoc scan` against N real containers, timed as a whole process
next to a hand-written baseline (bench/baseline.py) that does the least API work a scan needs.

    python bench/scan.py [--containers 200] [--rounds 7]

Starts N busybox containers labelled `dockdoc.bench=<run id>` and named `dockdoc-bench-<run id>-*`
on the default bridge (most idle after printing 300 access-log lines, some serving httpd on a
published port, a few exited), then runs
A = `python -m doctor scan --format json --fail-on never` and B = the baseline alternately,
R rounds after one warm-up of each. Removes only its own containers at the end, also
on Ctrl-C, SIGTERM or an error. Both processes list *every* container on the daemon, so run it on
a daemon with no other work for figures that mean what they say.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

# Appended, not prepended: PYTHONPATH=<another checkout> then decides which dockdoc is measured.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import docker  # noqa: E402
import docker.errors  # noqa: E402

from bench.common import REPO, median, run_child, table  # noqa: E402
from tests.dockerlab import ensure_busybox_image  # noqa: E402

LABEL = "dockdoc.bench"
PREFIX = "dockdoc-bench-"
WORKERS = 8
TARGET, GOAL = 1.3, 1.0

# 300 nginx-style access lines, then the real work. Busybox sh, no external commands but echo.
_LOG_LINES = (
    'i=0; while [ $i -lt 300 ]; do '
    'echo "172.17.0.1 - - [27/Nov/2026:08:$((i / 60 % 60)):$((i % 60)) +0000] '
    '\\"GET /api/items/$i HTTP/1.1\\" 200 $((i * 37 % 900 + 100)) \\"-\\" \\"python-requests/2.32.3\\""; '
    'i=$((i + 1)); done; '
)


def plan(count: int) -> list[dict]:
    """The mix, in twentieths: 12 idle, 4 httpd on 0.0.0.0 published, 1 httpd on 127.0.0.1
    published (a real bind-loopback finding), 3 exited with code 1."""
    specs = []
    for index in range(count):
        slot = index % 20
        if slot < 12:
            spec = {"kind": "idle", "cmd": _LOG_LINES + "exec sleep 100000", "ports": None}
        elif slot < 16:
            spec = {"kind": "httpd", "cmd": _LOG_LINES + "exec httpd -f -p 0.0.0.0:80 -h /www",
                    "ports": {80: None}}
        elif slot < 17:
            spec = {"kind": "httpd-loopback", "cmd": _LOG_LINES + "exec httpd -f -p 127.0.0.1:80 -h /www",
                    "ports": {80: None}}
        else:
            spec = {"kind": "exited", "cmd": _LOG_LINES + 'echo "Error: could not connect to db:5432" >&2; exit 1',
                    "ports": None}
        spec["index"] = index
        specs.append(spec)
    return specs


class Fleet:
    """The benchmark's containers, on the default bridge (as `docker run` puts them): created
    concurrently, removed by label and name prefix. (A network of their own was tried: Docker
    20.10 keeps stale endpoints after 200 concurrent removals and then refuses to remove it.)"""

    def __init__(self, api, run_id: str):
        self.api = api
        self.run_id = run_id
        self.network = f"{PREFIX}{run_id}"
        self.network_id = None

    def create(self, image: str, specs: list[dict]) -> None:
        pool = ThreadPoolExecutor(max_workers=WORKERS)
        try:
            futures = [pool.submit(self._start_one, image, spec) for spec in specs]
            for number, future in enumerate(futures, 1):
                future.result()
                if number % 50 == 0 or number == len(futures):
                    print(f"  started {number}/{len(futures)}", flush=True)
        finally:
            # On Ctrl-C, do not start what is still queued; wait for the requests in flight so
            # that cleanup's listing sees every container that will ever exist.
            pool.shutdown(wait=True, cancel_futures=True)

    def _start_one(self, image: str, spec: dict) -> None:
        name = f"{PREFIX}{self.run_id}-{spec['kind']}-{spec['index']:04d}"
        host_config = self.api.create_host_config(port_bindings=spec["ports"])
        container = self.api.create_container(
            image, command=["sh", "-c", spec["cmd"]], name=name,
            labels={LABEL: self.run_id}, host_config=host_config,
            ports=list(spec["ports"]) if spec["ports"] else None,
        )
        self.api.start(container["Id"])

    def wait_settled(self, specs: list[dict], timeout: float = 300) -> None:
        """Until every container is in its intended state and the exited ones have exited."""
        want_exited = sum(1 for s in specs if s["kind"] == "exited")
        want_running = len(specs) - want_exited
        deadline = time.monotonic() + timeout
        while True:
            mine = self.mine()
            running = sum(1 for c in mine if c["State"] == "running")
            exited = sum(1 for c in mine if c["State"] == "exited")
            if running == want_running and exited == want_exited:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"containers did not settle: {running} running (want {want_running}), "
                                   f"{exited} exited (want {want_exited})")
            time.sleep(0.5)
        time.sleep(1.0)  # let the last loops finish printing their 300 log lines

    def mine(self) -> list[dict]:
        found = self.api.containers(all=True, filters={"label": f"{LABEL}={self.run_id}"})
        return [c for c in found if any(n.lstrip("/").startswith(PREFIX) for n in c.get("Names") or [])]

    def remove(self) -> int:
        removed = _remove(self.api, self.mine())
        for network in self.api.networks(names=[self.network], filters={"label": f"{LABEL}={self.run_id}"}):
            if network["Name"] == self.network:
                _remove_network(self.api, network["Id"])
        return removed


def _remove_network(api, network_id: str, tries: int = 10) -> None:
    """The daemon may report endpoints for a moment after their containers are gone: retry, and
    in the end warn rather than fail (an empty network costs nothing; a lost result does)."""
    for attempt in range(tries):
        try:
            api.remove_network(network_id)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "active endpoints" in str(exc) and attempt < tries - 1:
                time.sleep(0.5)
                continue
            reason = (exc.explanation or str(exc)).strip()
            print(f"warning: could not remove network {network_id[:12]}: {reason}; "
                  f"`docker network rm {network_id[:12]}` (or --remove-leftovers) later", file=sys.stderr)
            return


def _remove(api, summaries: list[dict]) -> int:
    def one(summary):
        try:
            api.remove_container(summary["Id"], force=True, v=True)
        except docker.errors.NotFound:
            pass

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(one, summaries))
    return len(summaries)


def remove_leftovers(api) -> int:
    """Containers and networks of earlier, interrupted benchmark runs (label and name prefix both
    required)."""
    found = api.containers(all=True, filters={"label": LABEL})
    removed = _remove(api, [c for c in found if any(n.lstrip("/").startswith(PREFIX) for n in c.get("Names") or [])])
    for network in api.networks(filters={"label": LABEL}):
        if network["Name"].startswith(PREFIX):
            _remove_network(api, network["Id"], tries=1)
    return removed


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def measure(rounds: int, expected: int) -> dict:
    python = sys.executable
    commands = {
        "dockdoc": [python, "-m", "doctor", "scan", "--format", "json", "--fail-on", "never"],
        "baseline": [python, str(REPO / "bench" / "baseline.py")],
    }
    env = dict(os.environ)
    times = {name: [] for name in commands}
    rss = {name: [] for name in commands}
    rows = []
    with tempfile.TemporaryDirectory(prefix="dockdoc-bench-") as tmp:
        out = {name: os.path.join(tmp, f"{name}.out") for name in commands}

        def run(name):
            # cwd is not the repo, so that `-m doctor` imports what PYTHONPATH names, if anything.
            elapsed, peak, code, err = run_child(commands[name], out[name], env=env, cwd=tmp)
            if code != 0:
                raise RuntimeError(f"{name} exited {code}: {err.strip()[-1000:]}")
            return elapsed, peak

        # Warm-up (not counted): page cache, .pyc files, and a check that both saw the fleet.
        for name in commands:
            run(name)
        with open(out["dockdoc"], encoding="utf-8") as handle:
            document = json.load(handle)
        with open(out["baseline"], encoding="utf-8") as handle:
            baseline_line = handle.read().strip()
        seen = document["summary"]["containers"]
        if seen < expected:
            raise RuntimeError(f"dockdoc saw {seen} containers, expected at least {expected}")
        counts = document["summary"]["findings"]
        import_check = [python, "-c", "import doctor, os; print(os.path.dirname(os.path.dirname(doctor.__file__)))"]
        where = subprocess.run(import_check, capture_output=True, text=True, env=env, cwd=tmp).stdout.strip()
        print(f"measuring dockdoc from {where}")
        print(f"warm-up: dockdoc saw {seen} containers, findings {counts}, "
              f"unknown checks {document['summary']['unknown_checks']}; baseline: {baseline_line}")

        for number in range(1, rounds + 1):
            order = ["dockdoc", "baseline"] if number % 2 else ["baseline", "dockdoc"]
            got = {}
            for name in order:
                got[name] = run(name)
                times[name].append(got[name][0])
                rss[name].append(got[name][1])
            rows.append([number, "".join(n[0].upper() for n in order), got["dockdoc"][0], got["baseline"][0],
                         got["dockdoc"][0] / got["baseline"][0], f"{got['dockdoc'][1]:.1f}",
                         f"{got['baseline'][1]:.1f}"])
            print(f"  round {number}/{rounds}: dockdoc {got['dockdoc'][0]:.3f}s  baseline {got['baseline'][0]:.3f}s",
                  flush=True)
    return {"times": times, "rss": rss, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200, help="containers to start (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of each process (default 7)")
    parser.add_argument("--remove-leftovers", action="store_true",
                        help="first remove containers left by earlier, interrupted benchmark runs")
    args = parser.parse_args(argv)

    client = docker.from_env(timeout=120)
    api = client.api
    run_id = uuid.uuid4().hex[:8]
    fleet = Fleet(api, run_id)
    # SIGINT too, explicitly: a shell starts background jobs with it ignored, and Python keeps that.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    try:
        if args.remove_leftovers:
            print(f"removed {remove_leftovers(api)} leftover benchmark containers")
        others = len(api.containers(all=True))
        if others:
            print(f"note: the daemon already has {others} other containers; both processes scan them too")
        image = ensure_busybox_image(api)
        specs = plan(args.containers)
        print(f"run {run_id}: starting {len(specs)} containers from {image} ({WORKERS} at a time)", flush=True)
        started = time.perf_counter()
        fleet.create(image, specs)
        fleet.wait_settled(specs)
        print(f"fleet ready in {time.perf_counter() - started:.1f}s", flush=True)

        result = measure(args.rounds, len(specs))
    except KeyboardInterrupt:
        print("\ninterrupted: removing the benchmark's containers", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not leave containers behind.
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            removed = fleet.remove()
            print(f"removed {removed} benchmark containers and their network (run {run_id})", file=sys.stderr)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    times, rss = result["times"], result["rss"]
    a, b = median(times["dockdoc"]), median(times["baseline"])
    ratio = a / b
    peak = max(rss["dockdoc"])
    version = api.version()
    print()
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, Docker Engine {version.get('Version')}; "
          f"{args.containers} containers, {args.rounds} rounds (order alternates: D = dockdoc, B = baseline)")
    print(table(["round", "order", "dockdoc s", "baseline s", "ratio", "dockdoc RSS MB", "baseline RSS MB"],
                result["rows"]))
    print()
    print(table(["process", "median s", "min s", "max s", "peak RSS MB"], [
        ["dockdoc scan --format json", a, min(times["dockdoc"]), max(times["dockdoc"]), f"{peak:.1f}"],
        ["baseline (SDK by hand)", b, min(times["baseline"]), max(times["baseline"]),
         f"{max(rss['baseline']):.1f}"],
    ]))
    verdict = "goal met" if ratio < GOAL else ("within target" if ratio <= TARGET else "OVER TARGET")
    print(f"\nratio A/B = {ratio:.2f} (target <= {TARGET}, goal < {GOAL}): {verdict}")
    print(f"ratio={ratio:.3f} dockdoc_median={a:.3f} baseline_median={b:.3f} dockdoc_peak_rss_mb={peak:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
