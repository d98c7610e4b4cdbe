"""Each cause of issue 5, reproduced with real server software (Debian's nginx-light, Flask/werkzeug,
gunicorn, uvicorn, Django, BusyBox) in real containers, with real requests sent by the test to the
published port on 127.0.0.1; then diagnosed the way `dockdoc scan --probe` will once the collectors
are wired in: collect, summarise the access log, join, probe, evaluate the built-in rules.

Every test also checks the containers that are healthy in its scene get no warning and no error.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker.errors
import pytest

from doctor.collect import accesslog, joins
from doctor.collect.docker import collect
from doctor.engine.evaluate import evaluate
from doctor.engine.packs import all_rules, load_all
from doctor.probe import probe_endpoint, probe_ports
from tests.dockerlab import LABEL, RUN_ID, free_port

RULES = all_rules(load_all(entry_points=False))


# ---- helpers ---------------------------------------------------------------------------------

def diagnose(api, names, probe=False):
    """The snapshot and findings for these containers, with the facts issue 5 adds."""
    snapshot = collect(api, list(names))
    for container in snapshot["containers"]:
        container["http"] = accesslog.summarize(container["logs"]["lines"]) if container.get("logs") else None
    joins.join(snapshot["containers"])
    if probe:
        probe_ports(snapshot, timeout=3.0)
    return snapshot, evaluate(snapshot, RULES).findings


def of(findings, name, rule=None):
    return [f for f in findings if f["container"]["name"] == name and (rule is None or f["rule"] == f"dockdoc/{rule}")]


def one(findings, name, rule):
    found = of(findings, name, rule)
    assert len(found) == 1, f"{rule} on {name}: {found or [(f['rule'], f['message']) for f in of(findings, name)]}"
    return found[0]


def assert_healthy(findings, *names):
    bad = [(f["container"]["name"], f["rule"], f["message"]) for f in findings
           if f["container"]["name"] in names and f["severity"] in ("warning", "error")]
    assert not bad, bad


def facts_of(snapshot, name):
    return next(c for c in snapshot["containers"] if c["name"] == name)


def logs(api, name) -> str:
    return api.logs(name, stdout=True, stderr=True).decode("utf-8", "replace")


def wait_log(api, name, text, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = logs(api, name)
        if text in out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: no {text!r} in its log after {timeout}s:\n{out[-2000:]}")
        time.sleep(0.2)


def wait_exited(lab, name, timeout=30.0) -> dict:
    return lab.wait_for(name, lambda i: i["State"]["Status"] == "exited", timeout, what="exit")


def log_line(api, name, text, timeout=30.0) -> str:
    """The last line of the container's log that contains `text`, exactly as the server printed it
    (waiting for it: Docker copies a container's output to its log asynchronously)."""
    out = wait_log(api, name, text, timeout)
    return [line for line in out.splitlines() if text in line][-1]


def request(port, method="GET", path="/", body=None, headers=None, timeout=15.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def tls_handshake(port) -> str:
    """What a client that wrongly uses https:// does to a plain-HTTP port."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname="localhost"):
                return "handshake completed"
        except (ssl.SSLError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"


def nginx(conf: str, info: bool = False) -> list[str]:
    """nginx in the foreground with one conf.d file, logging to the container's stdout/stderr
    (as the official image does), written into the container by its own shell."""
    level = " error_log stderr info;" if info else ""
    script = (
        "ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log && "
        "rm -f /etc/nginx/sites-enabled/default && cat > /etc/nginx/conf.d/test.conf <<'EOF'\n"
        f"{conf}\nEOF\n"
        f"exec nginx -g 'daemon off;{level}'"
    )
    return ["sh", "-c", script]


def with_file(path: str, text: str, command: str) -> list[str]:
    return ["sh", "-c", f"mkdir -p {Path(path).parent} && cat > {path} <<'EOF'\n{text}\nEOF\n{command}"]


def put_files(api, name, directory, files: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for filename, data in files.items():
            info = tarfile.TarInfo(filename)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    assert api.put_archive(name, directory, buffer.getvalue())


def self_signed() -> tuple[bytes, bytes]:
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{tmp}/k",
                            "-out", f"{tmp}/c", "-days", "2", "-subj", "/CN=localhost"],
                           check=True, capture_output=True)
            return Path(f"{tmp}/c").read_bytes(), Path(f"{tmp}/k").read_bytes()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture
def network(docker_api, lab):
    """User-defined networks for one test, removed after its containers."""
    made = []

    def make(suffix: str) -> str:
        name = f"dockdoc-test-{RUN_ID}-{suffix}-{uuid.uuid4().hex[:4]}"
        docker_api.create_network(name, driver="bridge", labels={LABEL: RUN_ID})
        made.append(name)
        return name

    yield make
    lab.cleanup()
    for name in made:
        try:
            docker_api.remove_network(name)
        except docker.errors.NotFound:
            pass


GUNICORN = ["gunicorn", "--access-logfile", "-", "-b"]
SLOW_APP = '''import time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]'''
DJANGO_SETTINGS = '''import os
DEBUG = True
ALLOWED_HOSTS = []
SECRET_KEY = {secret}
ROOT_URLCONF = "testurls"
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]'''
DJANGO_URLS = '''from django.http import HttpResponse
from django.urls import path
urlpatterns = [path("", lambda request: HttpResponse("ok\\n"))]'''


def django(secret: str) -> list[str]:
    script = (
        "mkdir -p /tmp/site && cat > /tmp/site/testsettings.py <<'EOF'\n"
        f"{DJANGO_SETTINGS.format(secret=secret)}\nEOF\n"
        "cat > /tmp/site/testurls.py <<'EOF'\n"
        f"{DJANGO_URLS}\nEOF\n"
        "exec django-admin runserver 0.0.0.0:8000 --noreload --settings=testsettings --pythonpath=/tmp/site"
    )
    return ["sh", "-c", script]


# ---- upstream-refused --------------------------------------------------------------------------

def test_nginx_proxy_pass_to_127_0_0_1_is_upstream_refused(docker_api, debian, lab, network):
    net = network("loopback")
    web = lab.run(debian, GUNICORN + ["0.0.0.0:3001", "wsgiapp:app"], name="web", network_mode=net)
    port = free_port()
    proxy = lab.run(debian, nginx("server { listen 80; location / { proxy_pass http://127.0.0.1:3001; } }"),
                    name="proxy", ports={80: ("127.0.0.1", port)}, network_mode=net)
    lab.wait_listening(proxy, 80)
    lab.wait_listening(web, 3001)
    assert request(port) == 502
    line = log_line(docker_api, proxy, "while connecting to upstream")
    assert 'upstream: "http://127.0.0.1:3001/"' in line

    snapshot, findings = diagnose(docker_api, [proxy, web])
    finding = one(findings, proxy, "upstream-refused-loopback")
    assert finding["cause"] == "upstream-refused" and finding["severity"] == "error"
    assert f"log: {line}" in finding["evidence"]
    assert f"containers on its networks that listen on that port: {web}" in finding["evidence"]
    assert f"`proxy_pass http://{web}:3001;`" in finding["fix"]
    assert not of(findings, proxy, "upstream-refused")  # the generic rule stands aside
    assert facts_of(snapshot, proxy)["http"]["by_status"] == {"502": 1}
    assert_healthy(findings, web)


@pytest.mark.parametrize("bind, rule, says", [
    ("127.0.0.1:8000", "upstream-refused-upstream-loopback", "which listens on 127.0.0.1:8000 only"),
    ("0.0.0.0:5000", "upstream-refused-wrong-port", "it listens on 5000"),
])
def test_upstream_container_unreachable_on_its_port(docker_api, debian, lab, network, bind, rule, says):
    net = network("upstream")
    api_name = lab.run(debian, GUNICORN + [bind, "wsgiapp:app"], name="api", network_mode=net)
    lab.wait_listening(api_name, int(bind.rsplit(":", 1)[1]))
    port = free_port()
    proxy = lab.run(debian, nginx(f"server {{ listen 80; location / {{ proxy_pass http://{api_name}:8000; }} }}"),
                    name="proxy", ports={80: ("127.0.0.1", port)}, network_mode=net)
    lab.wait_listening(proxy, 80)
    assert request(port) == 502
    line = log_line(docker_api, proxy, "while connecting to upstream")

    snapshot, findings = diagnose(docker_api, [proxy, api_name])
    finding = one(findings, proxy, rule)
    assert finding["evidence"][0] == f"log (1x): {line}"
    assert says in finding["message"]
    if rule.endswith("wrong-port"):
        assert f"proxy_pass http://{api_name}:5000;" in finding["fix"]
    else:
        assert "-b 0.0.0.0:8000" in finding["fix"]
    assert not of(findings, proxy, "upstream-refused")
    upstream = facts_of(snapshot, proxy)["upstreams"][0]
    assert upstream["target"]["name"] == api_name and upstream["target"]["matched_by"] == "ip"

    # scanning the proxy alone: the rest of `docker ps` still names the upstream (sockets unknown)
    alone = collect(docker_api, [proxy])
    peers = [joins.peer_from_summary(s) for s in docker_api.containers(all=True) if s["Id"] != alone["containers"][0]["id"]]
    joins.join(alone["containers"], peers=peers)
    upstream = alone["containers"][0]["upstreams"][0]
    assert upstream["target"]["name"] == api_name and upstream["diagnosis"] == "target-sockets-unknown"


# ---- upstream-timeout --------------------------------------------------------------------------

def test_gunicorn_worker_timeout_behind_nginx(docker_api, debian, lab, network):
    net = network("slow")
    slow = lab.run(debian, with_file("/tmp/slow/slow.py", SLOW_APP,
                                     "exec gunicorn --chdir /tmp/slow --timeout 3 --access-logfile - -b 0.0.0.0:8000 slow:app"),
                   name="slow", network_mode=net)
    lab.wait_listening(slow, 8000)
    port = free_port()
    conf = (f"server {{ listen 80;"
            f" location /short/ {{ proxy_pass http://{slow}:8000/; proxy_read_timeout 1s; }}"
            f" location /long/ {{ proxy_pass http://{slow}:8000/; proxy_read_timeout 20s; }} }}")
    proxy = lab.run(debian, nginx(conf), name="proxy", ports={80: ("127.0.0.1", port)}, network_mode=net)
    lab.wait_listening(proxy, 80)
    assert request(port, path="/short/slow") == 504   # nginx gives up first
    assert request(port, path="/long/slow") == 502    # gunicorn kills the worker first
    wait_log(docker_api, slow, "WORKER TIMEOUT")

    _, findings = diagnose(docker_api, [proxy, slow])
    worker = one(findings, slow, "worker-timeout")
    assert worker["cause"] == "upstream-timeout"
    assert worker["evidence"][0] == f"log: {log_line(docker_api, slow, 'WORKER TIMEOUT')}"
    assert "--timeout 120" in worker["fix"]
    read = one(findings, proxy, "proxy-read-timeout")
    assert f"log: {log_line(docker_api, proxy, 'upstream timed out')}" in read["evidence"]
    assert f"the upstream is container {slow}" in read["evidence"]
    closed = one(findings, proxy, "upstream-closed")
    assert f"log: {log_line(docker_api, proxy, 'upstream prematurely closed connection')}" in closed["evidence"]


# ---- body and header limits ----------------------------------------------------------------------

def test_body_over_nginx_client_max_body_size(docker_api, debian, lab):
    port = free_port()
    proxy = lab.run(debian, nginx('server { listen 80; client_max_body_size 1k; location / { return 200 "ok\\n"; } }'),
                    name="nginx", ports={80: ("127.0.0.1", port)})
    lab.wait_listening(proxy, 80)
    assert request(port) == 200
    assert request(port, "POST", "/upload", body=b"x" * 10000, headers={"Content-Type": "application/octet-stream"}) == 413
    line = log_line(docker_api, proxy, "client intended to send too large body")

    snapshot, findings = diagnose(docker_api, [proxy])
    finding = one(findings, proxy, "nginx-body-too-large")
    assert finding["evidence"][0] == f"log: {line}"
    assert "raise client_max_body_size above the 10000-byte body that was refused" in finding["fix"].lower()
    assert "413 answers in the access log: 1" in finding["evidence"]
    assert not of(findings, proxy, "app-body-too-large")
    assert facts_of(snapshot, proxy)["http"]["by_status"] == {"200": 1, "413": 1}


def test_request_line_over_gunicorn_limit(docker_api, debian, lab):
    port = free_port()
    app = lab.run(debian, ["gunicorn", "--log-level", "debug", "--access-logfile", "-", "-b", "0.0.0.0:8000",
                           "wsgiapp:app"], name="gunicorn", ports={8000: ("127.0.0.1", port)})
    lab.wait_listening(app, 8000)
    assert request(port, path="/" + "x" * 5000) == 400
    line = log_line(docker_api, app, "Request Line is too large")

    _, findings = diagnose(docker_api, [app])
    finding = one(findings, app, "header-too-large")
    assert finding["evidence"][0] == f"log: {line}"
    assert "(5014 bytes, limit 4094)" in finding["message"]
    assert "--limit-request-line" in finding["fix"]


# ---- tls-mismatch ------------------------------------------------------------------------------

def test_tls_handshake_to_a_plain_werkzeug_port_and_the_probe_adds_no_noise(docker_api, debian, lab):
    port = free_port()
    app = lab.run(debian, ["flask", "--app", "flaskapp", "run", "--host", "0.0.0.0"], name="flask",
                  ports={5000: ("127.0.0.1", port)})
    lab.wait_listening(app, 5000)
    assert request(port) == 200
    assert "WRONG_VERSION_NUMBER" in tls_handshake(port)
    # "Bad request version" or "Bad request syntax ('\x16\x03...')", depending on the random bytes
    line = log_line(docker_api, app, "code 400, message Bad")

    snapshot, findings = diagnose(docker_api, [app], probe=True)
    finding = one(findings, app, "tls-to-plain-port")
    assert finding["cause"] == "tls-mismatch" and finding["severity"] == "warning"
    assert f"log: {line}" in finding["evidence"]
    assert f"probe: 127.0.0.1:{port} answers plain HTTP, not TLS" in finding["evidence"]
    [item] = [p for p in facts_of(snapshot, app)["ports"] if p["port"] == 5000]
    probe = item["probe"]
    assert probe["connect"] == "accepted" and probe["reply"]["status"] == 200
    assert probe["reply"]["server"].startswith("Werkzeug/")
    assert probe["tls"] is False and probe["tls_detail"] == "answered plain HTTP"
    assert facts_of(snapshot, app)["http"]["tls_handshakes"] == 1
    # the probe sent no ClientHello to this plain port: still exactly one bad request in its log
    assert logs(docker_api, app).count("code 400, message Bad") == 1
    assert not of(findings, app, "app-rejected-request")


def test_tls_handshake_to_a_plain_nginx_port(docker_api, debian, lab):
    port = free_port()
    proxy = lab.run(debian, nginx('server { listen 80; location / { return 200 "ok\\n"; } }'), name="nginx",
                    ports={80: ("127.0.0.1", port)})
    lab.wait_listening(proxy, 80)
    tls_handshake(port)
    wait_log(docker_api, proxy, '"\\x16\\x03')

    snapshot, findings = diagnose(docker_api, [proxy])
    assert facts_of(snapshot, proxy)["http"]["tls_handshakes"] == 1
    finding = one(findings, proxy, "tls-to-plain-port")
    assert any(e.startswith('access log: 172.') and '"\\x16\\x03' in e for e in finding["evidence"])


def test_plain_http_to_an_nginx_tls_port(docker_api, debian, lab):
    port = free_port()
    conf = ("server { listen 443 ssl; ssl_certificate /etc/nginx/test-cert.pem; "
            'ssl_certificate_key /etc/nginx/test-key.pem; location / { return 200 "tls ok\\n"; } }')
    proxy = lab.run(debian, nginx(conf, info=True), name="nginx-tls", ports={443: ("127.0.0.1", port)}, start=False)
    cert, key = self_signed()
    put_files(docker_api, proxy, "/etc/nginx", {"test-cert.pem": cert, "test-key.pem": key})
    docker_api.start(proxy)
    lab.wait_listening(proxy, 443)
    assert request(port) == 400  # http:// to an https port
    line = log_line(docker_api, proxy, "client sent plain HTTP request to HTTPS port")

    snapshot, findings = diagnose(docker_api, [proxy], probe=True)
    finding = one(findings, proxy, "plain-http-to-tls-port")
    assert finding["evidence"][0] == f"log: {line}"
    assert f"probe: 127.0.0.1:{port} speaks TLS" in finding["evidence"]
    probe = one(findings, proxy, "probe-tls-only-port")
    assert probe["severity"] == "info"
    [item] = [p for p in facts_of(snapshot, proxy)["ports"] if p["port"] == 443]
    # port 443: TLS first, and GET / over TLS, so the probe itself sent no plain request
    assert item["probe"]["tls"] is True and item["probe"]["tls_detail"].startswith("TLSv1.")
    assert item["probe"]["scheme"] == "https"
    assert item["probe"]["reply"]["status"] == 200 and item["probe"]["reply"]["body_start"] == "tls ok"
    assert logs(docker_api, proxy).count("client sent plain HTTP request to HTTPS port") == 1


# ---- host-header-rejected -----------------------------------------------------------------------

def test_django_rejects_host_headers(docker_api, debian, lab):
    port = free_port()
    app = lab.run(debian, django('"dockdoc-test-secret-key-not-for-production"'), name="django",
                  ports={8000: ("127.0.0.1", port)})
    lab.wait_listening(app, 8000, timeout=60)
    assert request(port) == 200  # 127.0.0.1 is allowed while DEBUG is on
    for _ in range(3):
        assert request(port, headers={"Host": "192.168.99.100:8000"}) == 400
    assert request(port, headers={"Host": "my_app:8000"}) == 400
    wait_log(docker_api, app, "RFC 1034/1035")

    _, findings = diagnose(docker_api, [app])
    allowed = one(findings, app, "django-allowed-hosts")
    assert allowed["evidence"][0] == f"log: {log_line(docker_api, app, 'You may need to add')}"
    assert allowed["fix"].startswith("Add '192.168.99.100' to ALLOWED_HOSTS")
    rfc = one(findings, app, "django-host-not-rfc1034")
    assert "'my_app:8000'" in rfc["message"]
    # four 400s on GET /, but their cause is the Host check, not the request's body
    assert not of(findings, app, "app-rejected-request")


# ---- app-rejected-request -----------------------------------------------------------------------

def test_flask_answers_400_to_the_wrong_content_type(docker_api, debian, lab):
    port = free_port()
    app = lab.run(debian, ["flask", "--app", "flaskapp", "run", "--host", "0.0.0.0"], name="flask",
                  ports={5000: ("127.0.0.1", port)})
    lab.wait_listening(app, 5000)
    assert request(port) == 200
    assert request(port, path="/nope") == 404  # one 404: not a finding
    for _ in range(6):  # form-encoded, as `curl -d` sends it, to an endpoint that reads JSON
        assert request(port, "POST", "/process", body="text=hello",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}) == 400
    wait_log(docker_api, app, '"POST /process HTTP/1.1" 400')

    snapshot, findings = diagnose(docker_api, [app], probe=True)
    finding = one(findings, app, "app-rejected-request")
    assert "answered 400 to 6 of the last 6 POST /process requests" in finding["message"]
    assert "The network path is fine" in finding["message"]
    assert finding["evidence"][0] == f"access log (werkzeug): {log_line(docker_api, app, 'POST /process')}"
    assert "Content-Type: application/json" in finding["fix"]
    assert [f["rule"] for f in of(findings, app) if f["severity"] != "info"] == ["dockdoc/app-rejected-request"]
    # a request the app accepts
    assert request(port, "POST", "/process", body='{"text": "hello"}', headers={"Content-Type": "application/json"}) == 200
    wait_log(docker_api, app, '"POST /process HTTP/1.1" 200')
    _, findings = diagnose(docker_api, [app])
    assert "answered 400 to 6 of the last 7 POST /process" in one(findings, app, "app-rejected-request")["message"]


# ---- dns-resolution -----------------------------------------------------------------------------

def test_names_do_not_resolve_on_the_default_bridge(docker_api, debian, lab, network):
    api_name = lab.run(debian, GUNICORN + ["0.0.0.0:8000", "wsgiapp:app"], name="api")  # default bridge
    lab.wait_listening(api_name, 8000)
    proxy = lab.run(debian, nginx(f"server {{ listen 80; location / {{ proxy_pass http://{api_name}:8000; }} }}"),
                    name="proxy")
    client = lab.run(debian, ["python3", "-c", f"import urllib.request; urllib.request.urlopen('http://{api_name}:8000/')"],
                     name="client")
    # and a name on a user-defined network, asked for from another one
    back, front = network("back"), network("front")
    backend = lab.run(debian, GUNICORN + ["0.0.0.0:8000", "wsgiapp:app"], name="backend", network_mode=back)
    lab.wait_for(backend, lambda i: i["State"]["Running"], what="running")
    elsewhere = lab.run(debian, ["busybox", "wget", "-q", "-O-", f"http://{backend}:8000/"], name="elsewhere",
                        network_mode=front)
    for name in (proxy, client, elsewhere):
        wait_exited(lab, name)
    line = log_line(docker_api, proxy, "host not found in upstream")
    assert f'host not found in upstream "{api_name}"' in line

    _, findings = diagnose(docker_api, [api_name, proxy, client, backend, elsewhere])
    bridge = one(findings, proxy, "dns-default-bridge")
    assert bridge["evidence"][0] == f"log (1x): {line}"
    assert f"docker network connect appnet {api_name}" in bridge["fix"]
    assert not of(findings, proxy, "dns-resolution")
    # Python names no host in its error: the generic rule, with the real line
    generic = one(findings, client, "dns-resolution")
    assert generic["evidence"][0] == f"log: {log_line(docker_api, client, 'Name or service not known')}"
    other = one(findings, elsewhere, "dns-different-networks")
    assert other["evidence"][0] == f"log (1x): {log_line(docker_api, elsewhere, 'bad address')}"
    assert f"`docker network connect {back} {elsewhere}`" in other["fix"]
    assert_healthy(findings, api_name, backend)


def test_names_resolve_on_a_user_defined_network(docker_api, debian, lab, network):
    net = network("dns")
    api_name = lab.run(debian, GUNICORN + ["0.0.0.0:8000", "wsgiapp:app"], name="api", network_mode=net)
    lab.wait_listening(api_name, 8000)
    port = free_port()
    proxy = lab.run(debian, nginx(f"server {{ listen 80; location / {{ proxy_pass http://{api_name}:8000; }} }}"),
                    name="proxy", network_mode=net, ports={80: ("127.0.0.1", port)})
    lab.wait_listening(proxy, 80)
    assert request(port) == 200
    _, findings = diagnose(docker_api, [api_name, proxy], probe=True)
    assert_healthy(findings, api_name, proxy)


# ---- start-up failures --------------------------------------------------------------------------

NGINX_NON_ROOT = """pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
  client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi; access_log /tmp/access.log;
  server { listen 80; location / { return 200 "ok\\n"; } }
}"""


@pytest.mark.parametrize("server", ["nginx", "uvicorn"])
def test_non_root_server_on_port_80(docker_api, debian, lab, server):
    if server == "nginx":
        command = with_file("/tmp/nginx.conf", NGINX_NON_ROOT,
                            "exec setpriv --reuid=33 --regid=33 --clear-groups nginx -c /tmp/nginx.conf -g 'daemon off;'")
        text = "bind() to 0.0.0.0:80 failed (13: Permission denied)"
    else:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   "python3", "-m", "uvicorn", "--host", "0.0.0.0", "--port", "80", "asgiapp:app"]
        text = "error while attempting to bind on address ('0.0.0.0', 80): permission denied"
    # Docker 20.10+ lets any user bind low ports (ip_unprivileged_port_start=0); older engines,
    # rootless Docker and Kubernetes do not: this is their default.
    name = lab.run(debian, command, name=f"{server}-nonroot",
                   sysctls={"net.ipv4.ip_unprivileged_port_start": "1024"})
    wait_exited(lab, name)

    _, findings = diagnose(docker_api, [name])
    finding = one(findings, name, "privileged-port")
    assert finding["evidence"][0] == f"log: {log_line(docker_api, name, text)}"
    assert "cannot bind port 80 (0.0.0.0:80)" in finding["message"]
    assert "`-p 80:8080`" in finding["fix"]


def test_nginx_with_a_read_only_root_filesystem(docker_api, debian, lab):
    name = lab.run(debian, ["nginx", "-g", "daemon off;"], name="nginx-ro", read_only=True)
    wait_exited(lab, name)
    line = log_line(docker_api, name, "Read-only file system")
    assert 'mkdir() "/var/lib/nginx/body" failed (30: Read-only file system)' in line

    _, findings = diagnose(docker_api, [name])
    finding = one(findings, name, "read-only-rootfs")
    assert finding["evidence"][0] == f"log: {line}"
    assert "`--tmpfs /var/lib/nginx/body`" in finding["fix"]


@pytest.mark.parametrize("server", ["django", "gunicorn"])
def test_missing_environment_variable_at_start_up(docker_api, debian, lab, server):
    if server == "django":
        command = django('os.environ["DJANGO_SECRET_KEY"]')  # the common settings.py pattern, no -e given
        variable = "DJANGO_SECRET_KEY"
    else:
        command = with_file("/tmp/app/configured.py", 'import os\nDATABASE_URL = os.environ["DATABASE_URL"]\n'
                            "from wsgiapp import app\n",
                            "cd /tmp/app && exec gunicorn --pythonpath /apps -b 0.0.0.0:8000 configured:app")
        variable = "DATABASE_URL"
    name = lab.run(debian, command, name=f"{server}-config")
    wait_exited(lab, name, timeout=60)

    _, findings = diagnose(docker_api, [name])
    finding = one(findings, name, "missing-config")
    assert finding["evidence"][0] == f"log: KeyError: '{variable}'"
    assert f"the environment variable {variable} is not set" in finding["message"]
    assert f"`docker run -e {variable}=...`" in finding["fix"]


def test_app_that_starts_before_its_dependency(docker_api, debian, lab, network):
    net = network("deps")
    db = lab.run(debian, ["sh", "-c", "sleep 4; exec gunicorn -b 0.0.0.0:8000 wsgiapp:app"], name="db",
                 network_mode=net)
    lab.wait_for(db, lambda i: i["State"]["Running"], what="running")
    # fetches its configuration from `db` at start-up, then serves
    app = lab.run(debian, ["sh", "-c", f"busybox wget -q -O- http://{db}:8000/ && exec gunicorn -b 0.0.0.0:8080 wsgiapp:app"],
                  name="app", network_mode=net)
    wait_exited(lab, app)
    lab.wait_listening(db, 8000)
    line = log_line(docker_api, app, "Connection refused")
    assert line.startswith("wget: can't connect to remote host (")

    _, findings = diagnose(docker_api, [db, app])
    finding = one(findings, app, "dependency-not-ready")
    assert finding["evidence"][0] == f"log: {line}"
    assert f"{db} listens on 0.0.0.0:8000 now: a start-up race" in finding["evidence"]
    assert "condition: service_healthy" in finding["fix"]
    assert_healthy(findings, db)


def test_app_that_asks_localhost_for_another_container(docker_api, debian, lab, network):
    net = network("localhost")
    config = lab.run(debian, GUNICORN + ["0.0.0.0:8000", "wsgiapp:app"], name="config", network_mode=net)
    lab.wait_listening(config, 8000)
    app = lab.run(debian, ["sh", "-c", "busybox wget -q -O- http://127.0.0.1:8000/ && exec gunicorn -b 0.0.0.0:8080 wsgiapp:app"],
                  name="app", network_mode=net)
    wait_exited(lab, app)
    line = log_line(docker_api, app, "Connection refused")

    _, findings = diagnose(docker_api, [config, app])
    finding = one(findings, app, "client-connects-to-loopback")
    assert finding["cause"] == "upstream-refused"
    assert finding["evidence"][0] == f"log: {line}"
    assert "inside a container, localhost is the container itself" in finding["message"]
    # it was never going to be ready: not dependency-not-ready
    assert not of(findings, app, "dependency-not-ready")
    assert_healthy(findings, config)


# ---- exposure -----------------------------------------------------------------------------------

def test_private_service_port_published_on_every_interface(docker_api, busybox, lab):
    everywhere = lab.run(busybox, ["httpd", "-f", "-p", "6379", "-h", "/www"], name="redisish",
                         ports={6379: free_port()})
    local = lab.run(busybox, ["httpd", "-f", "-p", "6379", "-h", "/www"], name="redisish-local",
                    ports={6379: ("127.0.0.1", free_port())})
    lab.wait_listening(everywhere, 6379)
    _, findings = diagnose(docker_api, [everywhere, local])
    finding = one(findings, everywhere, "published-all-interfaces")
    assert finding["severity"] == "warning" and finding["port"] == "6379/tcp"
    assert "(Redis)" in finding["message"] and "`-p 127.0.0.1:" in finding["fix"]
    assert_healthy(findings, local)


def test_port_mapping_with_host_networking(docker_api, busybox, lab):
    # docker-py refuses this combination before it reaches the daemon; the docker CLI, which is how
    # users get here, sends it with a warning. So this one container is made by the CLI, with the
    # lab's label and name, and handed to the lab to remove.
    port = free_port()
    name = f"dockdoc-test-{RUN_ID}-hostnet"
    run = subprocess.run(["docker", "run", "-d", "--name", name, "--label", f"{LABEL}={RUN_ID}",
                          "--network", "host", "-p", f"{port}:80", busybox, "sleep", "300"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lab.created.append(run.stdout.strip())
    assert "Published ports are discarded when using host network mode" in run.stderr
    info = lab.inspect(name)
    assert info["HostConfig"]["PortBindings"] and not info["NetworkSettings"]["Ports"]
    _, findings = diagnose(docker_api, [name])
    finding = one(findings, name, "host-network-ports-discarded")
    assert f"HostConfig.PortBindings: 0.0.0.0:{port}->80/tcp" in finding["evidence"]


# ---- probe --------------------------------------------------------------------------------------

def test_probe_sees_what_a_client_sees_from_an_app_on_loopback(docker_api, debian, lab):
    port = free_port()
    app = lab.run(debian, ["flask", "--app", "flaskapp", "run"], name="flask-lo", ports={5000: ("127.0.0.1", port)})
    lab.wait_listening(app, 5000)
    snapshot, findings = diagnose(docker_api, [app], probe=True)
    [item] = [p for p in facts_of(snapshot, app)["ports"] if p["port"] == 5000]
    probe = item["probe"]
    assert probe["target"] == f"127.0.0.1:{port}" and probe["connect"] == "accepted"
    assert probe["reply"]["error"] in ("empty reply", "reset")
    assert probe["tls"] is not True
    one(findings, app, "bind-loopback")
    # the sockets are readable here, so the probe's own rule leaves the diagnosis to bind-loopback
    assert not of(findings, app, "probe-empty-reply")
    assert snapshot["host"]["probe"]["ports"] == 1


def test_healthy_containers_get_no_warning_and_no_error(docker_api, debian, busybox, lab):
    flask_port, nginx_port, gunicorn_port, uvicorn_port = (free_port() for _ in range(4))
    flask = lab.run(debian, ["flask", "--app", "flaskapp", "run", "--host", "0.0.0.0"], name="ok-flask",
                    ports={5000: ("127.0.0.1", flask_port)})
    web = lab.run(debian, ["nginx", "-g", "daemon off;"], name="ok-nginx", ports={80: ("127.0.0.1", nginx_port)})
    guni = lab.run(debian, GUNICORN + ["0.0.0.0:8000", "wsgiapp:app"], name="ok-gunicorn",
                   ports={8000: ("127.0.0.1", gunicorn_port)})
    uvi = lab.run(debian, ["python3", "-m", "uvicorn", "--host", "0.0.0.0", "asgiapp:app"], name="ok-uvicorn",
                  ports={8000: ("127.0.0.1", uvicorn_port)})
    worker = lab.run(busybox, ["sleep", "300"], name="ok-worker")
    job = lab.run(busybox, ["true"], name="ok-job")
    for name, port in ((flask, 5000), (web, 80), (guni, 8000), (uvi, 8000)):
        lab.wait_listening(name, port)
    wait_exited(lab, job)
    for port in (flask_port, nginx_port, gunicorn_port, uvicorn_port):
        assert request(port) == 200
    assert request(flask_port, path="/favicon.ico") == 404  # a single 404 is not a finding
    assert request(flask_port, "POST", "/process", body='{"a": 1}', headers={"Content-Type": "application/json"}) == 200

    names = [flask, web, guni, uvi, worker, job]
    snapshot, findings = diagnose(docker_api, names, probe=True)
    assert_healthy(findings, *names)
    for name in (flask, web, guni, uvi):
        [item] = [p for p in facts_of(snapshot, name)["ports"] if p["published"]]
        assert item["probe"]["reply"]["status"] == 200, item["probe"]
        assert item["probe"]["tls"] is False
    assert facts_of(snapshot, flask)["http"]["by_status"] == {"200": 2, "404": 1}
    # probed and scanned again: still healthy, and the probe's request (gunicorn logs its
    # User-Agent) is left out of the access-log summary
    before = facts_of(snapshot, guni)["http"]
    again_snapshot, again = diagnose(docker_api, names)
    assert_healthy(again, *names)
    after = facts_of(again_snapshot, guni)["http"]
    assert after["probe_requests"] == 1 and after["requests"] == before["requests"]


# ---- the probe against local sockets: each answer a client can get, made on demand -------------
# (No Docker here: a real listening socket on 127.0.0.1 behaves in each of these ways for real.)


def _serve_once(handler):
    """A listening socket on 127.0.0.1 whose first connection `handler` deals with."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    pool = ThreadPoolExecutor(max_workers=1)

    def run():
        conn, _ = server.accept()
        try:
            handler(conn)
        finally:
            conn.close()

    pool.submit(run)
    return server, pool


def _close_without_a_byte(conn):
    conn.recv(4096)


def _reset(conn):
    conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


@pytest.mark.parametrize("handler, expected", [(_close_without_a_byte, "empty reply"), (_reset, "reset")])
def test_probe_tells_an_empty_reply_from_a_reset(handler, expected):
    server, pool = _serve_once(handler)
    try:
        result = probe_endpoint("127.0.0.1", server.getsockname()[1], timeout=2.0)
    finally:
        server.close()
        pool.shutdown(wait=True)
    assert result["connect"] == "accepted"
    assert result["reply"]["error"] == expected


def test_probe_refused_and_no_reply():
    result = probe_endpoint("127.0.0.1", free_port(), timeout=1.0)
    assert result["connect"] == "refused" and result["reply"] is None
    silent = socket.socket()  # the kernel completes the handshake; nobody ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        result = probe_endpoint("127.0.0.1", silent.getsockname()[1], timeout=0.5)
    finally:
        silent.close()
    assert result["connect"] == "accepted" and result["reply"]["error"] == "timeout"


def test_probe_finds_tls_on_a_port_that_is_not_a_tls_port_number():
    cert, key = self_signed()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "c.pem").write_bytes(cert)
        Path(tmp, "k.pem").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{tmp}/c.pem", f"{tmp}/k.pem")

    def tls_server(conn):
        try:  # the plain GET: the handshake fails and the connection closes
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    pool = ThreadPoolExecutor(max_workers=1)

    def run():
        for attempt in range(2):  # the plain request, then the ClientHello
            conn, _address = server.accept()
            with conn:
                if attempt == 0:
                    tls_server(conn)
                else:
                    with context.wrap_socket(conn, server_side=True):
                        pass

    pool.submit(run)
    try:
        result = probe_endpoint("127.0.0.1", server.getsockname()[1], timeout=2.0)
    finally:
        server.close()
        pool.shutdown(wait=True)
    assert result["scheme"] == "http" and result["reply"].get("status") is None
    assert result["tls"] is True and result["tls_detail"].startswith("TLSv1.")


def test_probe_only_goes_to_this_machine():
    snapshot = {"host": {"daemon": {"local": False}}, "containers": [
        {"name": "remote", "state": {"running": True},
         "ports": [{"port": 80, "proto": "tcp", "published": [{"host_ip": "0.0.0.0", "host_port": 8080}]}]}]}
    probe_ports(snapshot)
    assert snapshot["containers"][0]["ports"][0]["probe"]["skipped"].startswith("the Docker daemon is not on this machine")
    snapshot = {"host": {"daemon": {"local": True}}, "containers": [
        {"name": "elsewhere", "state": {"running": True},
         "ports": [{"port": 80, "proto": "tcp", "published": [{"host_ip": "203.0.113.7", "host_port": 8080}]}]},
        {"name": "stopped", "state": {"running": False},
         "ports": [{"port": 80, "proto": "tcp", "published": [{"host_ip": "0.0.0.0", "host_port": 8081}]}]}]}
    probe_ports(snapshot)
    assert snapshot["containers"][0]["ports"][0]["probe"] == {"skipped": "203.0.113.7 is not an address of this machine"}
    assert snapshot["containers"][1]["ports"][0]["probe"] == {"skipped": "the container is not running"}
    assert snapshot["host"]["probe"]["ports"] == 0
