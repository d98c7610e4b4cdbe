"""`dockdoc probe`: what a client on this host really gets from each published port.

Opt-in, because it sends traffic. Only to the published ports of running containers, only when the
daemon runs on this machine (the snapshot's `host.daemon.local`), and only to an address of this
machine: 127.0.0.1 (or ::1) for a port published on all interfaces, else the host IP it is bound to,
after checking that this machine owns that address. At most one TCP connection for the HTTP request
and one for a TLS handshake per port, each bounded by `timeout`.

`probe_ports(snapshot, timeout)` stores the result on each published TCP port entry, as `probe`:

    PROBE = {
      "target":     "127.0.0.1:8080",
      "connect":    "accepted" | "refused" | "reset" | "timeout" | "unreachable" | "error: <reason>",
      "connect_ms": float | null,
      "scheme":     "http" | "https"  (how the GET / below was sent)
      "reply":      null when not connected, else one HTTP GET / and what came back:
                    {"status": 400, "reason": "Bad Request", "http_version": "HTTP/1.1",
                     "server": "nginx/1.22.1" | null, "ttfb_ms": 3.2,
                     "body_start": the body's first 300 characters of text (HTML tags dropped,
                                   whitespace collapsed, control characters escaped)}
                    or {"error": "empty reply"    (the connection closed without a byte: what docker-proxy
                                                   does when nothing listens on the container's interface),
                                 | "reset"        (connection reset by peer)
                                 | "timeout"      (no byte within `timeout`)
                                 | "tls reply"    (the port answered with a TLS record: it speaks TLS)
                                 | "not http",    (some other protocol; see first_bytes)
                        "ttfb_ms": float | null, "first_bytes": str | null}
      "tls":        true (a TLS handshake completed) | false (the port answered, but not with TLS)
                    | null (not tried, or no answer to the ClientHello),
      "tls_detail": "TLSv1.3 TLS_AES_256_GCM_SHA384" | "answered plain HTTP" | the handshake error,
      "skipped":    "<why>" instead of all the above when the port was not probed
    }

The probe must not cause what the rules look for. So the TLS handshake is only tried when the plain
HTTP request got no proper HTTP answer (or got nginx's "plain HTTP request was sent to HTTPS port"):
a port that answers HTTP does not speak TLS, and a ClientHello sent to it would leave a "Bad
request version" line in the app's log that the tls-mismatch rules would then blame on the user.
The conventional TLS ports (TLS_PORTS, by container port) are the other way round: TLS first, and
GET / over TLS when it works, so that no plain request lands in a TLS server's log. The request
carries the User-Agent `dockdoc-probe/<version>`, which the access-log summary leaves out.

`host.probe` records when and how the probe ran: {"at", "timeout", "ports": n}.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from doctor import __version__, facts

USER_AGENT = f"dockdoc-probe/{__version__}"
MAX_READ = 16384  # bytes of a reply read at most
BODY_CHARS = 300
PLAIN_TO_TLS = b"plain HTTP request was sent to HTTPS port"
# Container ports that conventionally speak TLS: probed with TLS first.
TLS_PORTS = (443, 8443, 9443, 4443, 6443, 10443)
_PRINTABLE = {code: f"\\x{code:02x}" for code in [*range(0, 9), *range(10, 32), 127]}


def _printable(data: bytes, limit: int) -> str:
    return data[:limit].decode("utf-8", errors="replace").translate(_PRINTABLE)


def _text(body: bytes, limit: int) -> str:
    """The readable text of a short reply body: HTML tags dropped, whitespace collapsed."""
    text = body[:MAX_READ].decode("utf-8", errors="replace")
    out, inside = [], False
    for char in text:  # one pass, no regex: linear whatever the body holds
        if char == "<":
            inside = True
        elif char == ">" and inside:
            inside = False
            out.append(" ")
        elif not inside:
            out.append(char)
    return " ".join("".join(out).split())[:limit].translate(_PRINTABLE)


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def target_address(published: list[dict]) -> str | None:
    """The address to reach a published port at from this machine (IPv4 preferred)."""
    ordered = sorted(published, key=lambda b: ":" in (b.get("host_ip") or ""))
    for binding in ordered:
        if not binding.get("host_port"):
            continue
        host_ip = binding.get("host_ip") or "0.0.0.0"
        if host_ip == "0.0.0.0":
            return "127.0.0.1"
        if host_ip == "::":
            return "::1"
        return host_ip
    return None


def is_local_address(address: str) -> bool:
    """True for loopback and for addresses this machine can bind, i.e. owns."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
        return True
    except OSError:
        return False


def _connect(address: str, port: int, timeout: float) -> tuple[socket.socket | None, str, float | None]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    start = time.monotonic()
    try:
        sock.connect((address, port))
        return sock, "accepted", _ms(start)
    except ConnectionRefusedError:
        outcome = "refused"
    except ConnectionResetError:
        outcome = "reset"
    except (socket.timeout, TimeoutError):
        outcome = "timeout"
    except OSError as exc:
        outcome = "unreachable" if exc.errno in (101, 113) else f"error: {exc.strerror or exc}"
    sock.close()
    return None, outcome, None


def _http(sock: socket.socket, address: str, port: int, timeout: float) -> dict:
    host = f"[{address}]" if ":" in address else address
    request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {USER_AGENT}\r\n"
               "Accept: */*\r\nConnection: close\r\n\r\n").encode("ascii")
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    data = b""
    ttfb = None
    error = None
    try:
        sock.sendall(request)
        while len(data) < MAX_READ:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
            if not chunk:
                break
            if ttfb is None:
                ttfb = _ms(start)
            data += chunk
            if data.startswith(b"HTTP/") and b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                if len(body) >= BODY_CHARS or _complete(head, body):
                    break
            elif data[:1] in (b"\x15", b"\x16"):
                break
    except ConnectionResetError:
        error = "reset"
    except (socket.timeout, TimeoutError):
        error = "timeout" if not data else None
    except OSError as exc:
        error = f"error: {exc.strerror or exc}"
    if data.startswith(b"HTTP/"):
        return _parse_reply(data, ttfb)
    if data[:2] in (b"\x15\x03", b"\x16\x03"):
        return {"error": "tls reply", "ttfb_ms": ttfb, "first_bytes": _printable(data, 32)}
    if data:
        return {"error": "not http", "ttfb_ms": ttfb, "first_bytes": _printable(data, 64)}
    return {"error": error or "empty reply", "ttfb_ms": None, "first_bytes": None}


def _complete(head: bytes, body: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return body.endswith(b"0\r\n\r\n")
        if name.strip().lower() == b"content-length":
            try:
                return len(body) >= int(value.strip())
            except ValueError:
                return False
    return False


def _parse_reply(data: bytes, ttfb: float | None) -> dict:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].decode("latin-1").partition(" ")
    code, _, reason = rest.partition(" ")
    server = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"server":
            server = value.strip().decode("latin-1")
    return {
        "status": int(code) if code.isdigit() else None,
        "reason": reason.strip(),
        "http_version": version,
        "server": server,
        "ttfb_ms": ttfb,
        "body_start": _text(body, BODY_CHARS),
    }


def _tls(address: str, port: int, timeout: float, get: bool = False) -> tuple[bool | None, str, dict | None]:
    """Does the port complete a TLS handshake? With `get`, also GET / over it (the reply, or None)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we ask "does it speak TLS?", not "do we trust it?"
    sock, outcome, _ = _connect(address, port, timeout)
    if sock is None:
        return None, f"connect {outcome}", None
    try:
        with context.wrap_socket(sock, do_handshake_on_connect=False) as tls:
            tls.settimeout(timeout)
            tls.do_handshake()
            cipher = tls.cipher()
            detail = f"{tls.version()} {cipher[0] if cipher else ''}".strip()
            return True, detail, _http(tls, address, port, timeout) if get else None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if reason in ("UNEXPECTED_EOF_WHILE_READING",) or "EOF" in str(exc):
            return None, "the connection closed during the handshake", None
        return False, reason.lower().replace("_", " "), None
    except (socket.timeout, TimeoutError):
        return None, f"no answer to a TLS ClientHello within {timeout:g}s", None
    except ConnectionResetError:
        return None, "connection reset during the handshake", None
    except OSError as exc:
        return None, f"error: {exc.strerror or exc}", None
    finally:
        sock.close()


def probe_endpoint(address: str, port: int, timeout: float = 2.0, tls_first: bool = False) -> dict:
    """Connect, then GET / in plain HTTP and, when that found no HTTP, try TLS. With `tls_first`
    (the conventional TLS ports) the order is reversed, and a port that speaks TLS gets its GET /
    over TLS: a plain request would leave a "plain HTTP request to HTTPS port" line in its log."""
    shown = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    result = {"target": shown, "connect": None, "connect_ms": None, "scheme": "http", "reply": None,
              "tls": None, "tls_detail": None}
    sock, outcome, elapsed = _connect(address, port, timeout)
    result["connect"], result["connect_ms"] = outcome, elapsed
    if sock is None:
        return result
    if tls_first:
        sock.close()
        tls, detail, reply = _tls(address, port, timeout, get=True)
        if tls:
            result.update(scheme="https", reply=reply, tls=True, tls_detail=detail)
            return result
        sock, outcome, _ = _connect(address, port, timeout)
        if sock is None:
            result.update(tls=tls, tls_detail=detail, reply={"error": outcome, "ttfb_ms": None, "first_bytes": None})
            return result
    try:
        reply = _http(sock, address, port, timeout)
    finally:
        sock.close()
    result["reply"] = reply
    plain_to_tls = reply.get("status") == 400 and PLAIN_TO_TLS.decode() in (reply.get("body_start") or "")
    if reply.get("status") is not None and not plain_to_tls:
        result["tls"], result["tls_detail"] = False, "answered plain HTTP"
    elif tls_first:
        result["tls"], result["tls_detail"] = tls, detail
    else:
        result["tls"], result["tls_detail"], _ = _tls(address, port, timeout)
    return result


def probe_ports(snapshot: dict, timeout: float = 2.0, workers: int = 8) -> None:
    """Probe every published TCP port of the snapshot's running containers; results go to
    `port["probe"]` in place (see the module docstring)."""
    host = snapshot.setdefault("host", {})
    local = bool((host.get("daemon") or {}).get("local"))
    jobs = []
    for container in snapshot.get("containers") or []:
        running = bool((container.get("state") or {}).get("running"))
        for port in container.get("ports") or []:
            if not port.get("published") or port.get("proto", "tcp") != "tcp":
                continue
            if not local:
                port["probe"] = {"skipped": "the Docker daemon is not on this machine, so its published "
                                            "ports are not this machine's"}
                continue
            if not running:
                port["probe"] = {"skipped": "the container is not running"}
                continue
            address = target_address(port["published"])
            binding = next((b for b in port["published"] if b.get("host_port")), None)
            if address is None or binding is None:
                port["probe"] = {"skipped": "no host port is bound"}
                continue
            if not is_local_address(address):
                port["probe"] = {"skipped": f"{address} is not an address of this machine"}
                continue
            jobs.append((port, address, binding["host_port"]))
    if jobs:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
            results = list(pool.map(
                lambda job: probe_endpoint(job[1], job[2], timeout, tls_first=job[0].get("port") in TLS_PORTS), jobs))
        for (port, _address, _host_port), result in zip(jobs, results):
            port["probe"] = result
    host["probe"] = {"at": facts.now_iso(), "timeout": timeout, "ports": len(jobs)}
