"""`dockdoc watch` with many running containers: idle CPU share, peak RSS, and die → POST latency.

    python bench/watch.py [--containers 200] [--idle 60] [--kills 10]

1. Starts N busybox containers (no network; `sh` waiting on a `sleep`, exiting 3 on SIGTERM),
   labelled `dockdoc.bench=watch-<run>` and named `dockdoc-watchbench-<run>-NNNN`.
2. Starts `dockdoc watch 'dockdoc-watchbench-<run>-*' --post <local receiver>` as a child process,
   waits for its first full scan, then samples it for --idle seconds: CPU share (of one core) from
   its CPU times, RSS every 0.25 s, and VmHWM (the kernel's peak) at the end.
3. Stops --kills containers one at a time (SIGTERM → exit 3 → `exit-error`) and times each from the
   daemon's `die` event (its timeNano) to the POST arriving at the receiver. Baseline in the same
   run: a hand-written notifier in this process that, on the same `die` event, inspects the
   container and POSTs at once (no store, no rules, no debounce): ratio = dockdoc / baseline.
4. Removes its containers (also on Ctrl-C or SIGTERM).

Targets (issue 4): idle CPU < 1 %, RSS < 100 MB, die → POST < 2 s.
Last line: `idle_cpu_percent=... idle_peak_rss_mb=... peak_rss_mb=... die_to_post_median_s=...
die_to_post_max_s=... baseline_median_s=... ratio=...`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import REPO, table  # noqa: E402

from tests import dockerlab  # noqa: E402

RUN = uuid.uuid4().hex[:8]
PREFIX = f"dockdoc-watchbench-{RUN}-"
LABEL = "dockdoc.bench"


class Receiver:
    """POSTs land here; `arrivals[(path, container name)]` = wall-clock time of arrival."""

    def __init__(self):
        self.arrivals: dict = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                name = (body.get("finding") or {}).get("container", {}).get("name") or body.get("name")
                with receiver.cond:
                    receiver.arrivals.setdefault((self.path, name), at)
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, path: str, name: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (path, name) not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.arrivals[(path, name)]


def start_containers(api, image: str, count: int) -> list[str]:
    command = ["sh", "-c", "trap 'exit 3' TERM; sleep 86400 & wait"]

    def one(index: int) -> str:
        name = f"{PREFIX}{index:04d}"
        container = api.create_container(image, command, name=name, labels={LABEL: f"watch-{RUN}"},
                                         host_config=api.create_host_config(network_mode="none"))
        api.start(container["Id"])
        return name

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def remove_containers(api) -> None:
    summaries = api.containers(all=True, filters={"label": f"{LABEL}=watch-{RUN}"})
    mine = [s["Id"] for s in summaries if any(n.lstrip("/").startswith(PREFIX) for n in s.get("Names") or [])]

    def remove(container_id):
        try:
            api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(remove, mine))


def watch_die_events(api, dies: dict, baseline_url: str, stop: threading.Event) -> None:
    """Record each `die` of our containers, and be the baseline notifier: inspect + POST at once."""
    stream = api.events(decode=True, filters={"type": "container", "event": "die", "label": f"{LABEL}=watch-{RUN}"})
    for event in stream:
        name = (event.get("Actor") or {}).get("Attributes", {}).get("name")
        dies[name] = event["timeNano"] / 1e9
        info = api.inspect_container(event["Actor"]["ID"])
        body = json.dumps({"name": name, "exit_code": info["State"]["ExitCode"]}).encode()
        request = urllib.request.Request(f"{baseline_url}/baseline", data=body,
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        if stop.is_set():
            break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle sampling")
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()

    api = docker.from_env(timeout=120).api
    image = dockerlab.ensure_busybox_image(api)
    stop = threading.Event()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="dockdoc-watchbench-"))
    watch = None
    try:
        began = time.monotonic()
        names = start_containers(api, image, args.containers)
        print(f"started {len(names)} containers in {time.monotonic() - began:.1f}s", file=sys.stderr)
        receiver = Receiver()
        log_path = work / "watch.log"
        with open(log_path, "w") as log:
            watch = subprocess.Popen(
                [sys.executable, "-m", "doctor", "watch", f"{PREFIX}*", "--post", f"{receiver.url}/dockdoc",
                 "--state", str(work / "state.db"), "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        process = psutil.Process(watch.pid)
        deadline = time.monotonic() + 300
        first_scan = None
        while first_scan is None:
            for line in log_path.read_text().splitlines():
                if '"full scan:' in line:
                    first_scan = json.loads(line)["msg"]
            if time.monotonic() > deadline or watch.poll() is not None:
                print(log_path.read_text()[-2000:], file=sys.stderr)
                return 2
            time.sleep(0.2)
        print(f"first {first_scan}", file=sys.stderr)
        time.sleep(2)  # let the start-up settle (delivery thread, first GC)

        # -- idle ---------------------------------------------------------------------------------
        cpu_before, wall_before = process.cpu_times(), time.monotonic()
        rss = []
        while time.monotonic() - wall_before < args.idle:
            rss.append(process.memory_info().rss)
            time.sleep(0.25)
        cpu_after, wall_after = process.cpu_times(), time.monotonic()
        cpu_used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        idle_cpu = 100.0 * cpu_used / (wall_after - wall_before)
        idle_rss = max(rss) / 1048576
        with open(f"/proc/{watch.pid}/status") as status:
            hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

        # -- die -> POST ------------------------------------------------------------------------------
        dies: dict = {}
        threading.Thread(target=watch_die_events, args=(api, dies, receiver.url, stop), daemon=True).start()
        time.sleep(1)
        latencies, baselines, missing = [], [], 0
        for name in names[: args.kills]:
            api.kill(name, "SIGTERM")
            posted = receiver.wait("/dockdoc", name, timeout=30)
            base = receiver.wait("/baseline", name, timeout=30)
            died = dies.get(name)
            if posted is None or died is None or base is None:
                missing += 1
                continue
            latencies.append(posted - died)
            baselines.append(base - died)
            time.sleep(1)
        with open(f"/proc/{watch.pid}/status") as status:
            hwm_end = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

        watch.send_signal(signal.SIGTERM)
        code = watch.wait(60)
        med = statistics.median(latencies) if latencies else float("nan")
        worst = max(latencies) if latencies else float("nan")
        base_med = statistics.median(baselines) if baselines else float("nan")
        rows = [
            ["containers running", args.containers, ""],
            ["first full scan", first_scan.split(": ", 1)[1], ""],
            [f"idle CPU share over {args.idle:g}s (% of one core)", round(idle_cpu, 3), "< 1"],
            ["idle peak RSS (MB)", round(idle_rss, 1), "< 100"],
            ["peak RSS incl. first scan, VmHWM (MB)", round(hwm, 1), ""],
            ["peak RSS after the kills, VmHWM (MB)", round(hwm_end, 1), ""],
            [f"die -> POST median of {len(latencies)} (s)", round(med, 3), "< 2"],
            ["die -> POST max (s)", round(worst, 3), "< 2"],
            ["baseline notifier die -> POST median (s)", round(base_med, 3), ""],
            ["ratio dockdoc / baseline", round(med / base_med, 1) if base_med else "n/a", ""],
            ["kills without a POST within 30s", missing, "0"],
            ["watch exit code on SIGTERM", code, "0"],
        ]
        print(table(["measure", "value", "target"], rows))
        print(f"idle_cpu_percent={idle_cpu:.3f} idle_peak_rss_mb={idle_rss:.1f} peak_rss_mb={hwm_end:.1f} "
              f"die_to_post_median_s={med:.3f} die_to_post_max_s={worst:.3f} baseline_median_s={base_med:.3f} "
              f"ratio={med / base_med if base_med else float('nan'):.1f}")
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if watch is not None and watch.poll() is None:
            watch.kill()
        remove_containers(api)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
