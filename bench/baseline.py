"""The baseline bench/scan.py times dockdoc against: the least Docker API work a scan needs, by hand.

One list call, then for every container an inspect and a 200-line log tail, sequentially, with the
docker SDK as a user would write it. It prints one short line, so output costs nothing.
"""

import docker


def main() -> None:
    client = docker.from_env()
    api = client.api
    containers = api.containers(all=True)
    log_bytes = 0
    for summary in containers:
        try:
            api.inspect_container(summary["Id"])
            log_bytes += len(api.logs(summary["Id"], tail=200, timestamps=True))
        except docker.errors.APIError:
            continue  # vanished meanwhile, or a log driver that cannot be read (dockdoc notes it too)
    print(f"containers={len(containers)} log_bytes={log_bytes}")


if __name__ == "__main__":
    main()
