"""Cross-container facts, pure: container facts in (shaped as doctor.collect.docker makes them),
`upstreams` / `unresolved` out, then the built-in rules over them. Log lines are real ones."""

from __future__ import annotations

import pytest

from doctor.collect import joins
from doctor.engine.evaluate import evaluate
from doctor.engine.packs import all_rules, load_all

REFUSED = ('2026/11/27 08:44:31 [error] 11#11: *2 connect() failed (111: Connection refused) while connecting to '
           'upstream, client: 172.17.0.1, server: , request: "GET / HTTP/1.1", upstream: "{url}", host: "localhost:8080"')


def container(name, networks=(("app_default", "172.19.0.2", ()),), listeners=(), running=True, lines=(),
              service=None, logs=True):
    listeners = None if listeners is None else [
        {"address": a, "port": p, "proto": "tcp", "endpoint": f"{a}:{p}"} for a, p in listeners]
    c = {
        "id": name * 4, "short_id": (name * 12)[:12], "name": name, "display_name": name,
        "state": {"running": running, "status": "running" if running else "exited", "restarting": False,
                  "exit_code": 0 if running else 1},
        "restart": {"count": 0},
        "compose": {"project": "app", "service": service} if service else None,
        "networks": [{"name": n, "ip": ip, "aliases": list(aliases)} for n, ip, aliases in networks],
        "network_mode": networks[0][0] if networks else "none",
        "listeners": listeners,
        "reachable_ports": None if listeners is None else sorted(
            {l["port"] for l in listeners if l["address"] not in ("127.0.0.1", "::1")}),
        "listeners_source": "/proc/1/net/tcp" if listeners is not None else "unavailable: test",
        "ports": [],
        "logs": {"lines": list(lines), "times": [], "truncated": False} if logs else None,
        "unknown": {} if logs else {"logs": "unavailable: configured logging driver does not support reading"},
    }
    if listeners is None:
        c["unknown"]["listeners"] = "unavailable: test"
    return c


def findings_for(containers, name):
    joins.join(containers)
    snapshot = {"host": {}, "containers": containers}
    return [f for f in evaluate(snapshot, RULES).findings if f["container"]["name"] == name]


RULES = all_rules(load_all(entry_points=False))


def test_proxy_to_its_own_loopback():
    proxy = container("proxy", listeners=[("0.0.0.0", 80)], lines=[REFUSED.format(url="http://127.0.0.1:3001/")])
    web = container("web", networks=[("app_default", "172.19.0.3", ("web",))], listeners=[("0.0.0.0", 3001)])
    other = container("other", networks=[("elsewhere", "172.30.0.3", ())], listeners=[("0.0.0.0", 3001)])
    joins.join([proxy, web, other])
    [up] = proxy["upstreams"]
    assert (up["kind"], up["via"], up["host"], up["tcp_port"], up["loopback"]) == ("refused", "proxy", "127.0.0.1", 3001, True)
    assert up["diagnosis"] == "loopback"
    assert up["target"]["matched_by"] == "self" and up["target"]["listens"] is False
    # where it probably meant to go: a container on a shared network listening on 3001 (not one elsewhere)
    assert up["listening_peers"] == ["web"]
    assert web["upstreams"] == [] and web["unresolved"] == []


@pytest.mark.parametrize("listeners, running, diagnosis", [
    ([("127.0.0.1", 9000)], True, "target-loopback-only"),
    ([("0.0.0.0", 9001)], True, "target-wrong-port"),
    ([], True, "target-no-listener"),
    ([("0.0.0.0", 9000)], True, "target-listening"),
    ([("::", 9000)], True, "target-listening"),
    (None, True, "target-sockets-unknown"),
    ([], False, "target-not-running"),
])
def test_upstream_by_ip_is_joined_with_what_the_target_listens_on(listeners, running, diagnosis):
    proxy = container("proxy", lines=[REFUSED.format(url="fastcgi://172.19.0.3:9000")])
    php = container("php", networks=[("app_default", "172.19.0.3", ("php",))], listeners=listeners, running=running,
                    service="php")
    joins.join([proxy, php])
    [up] = proxy["upstreams"]
    assert up["scheme"] == "fastcgi" and up["address"] == "172.19.0.3:9000"
    assert up["target"]["name"] == "php" and up["target"]["matched_by"] == "ip"
    assert up["target"]["shared_networks"] == ["app_default"]
    assert up["diagnosis"] == diagnosis
    if diagnosis == "target-loopback-only":
        assert up["target"]["endpoints"] == ["127.0.0.1:9000"]
        assert up["target"]["listens"] is True and up["target"]["listens_reachable"] is False
    if diagnosis == "target-wrong-port":
        assert up["target"]["open_ports"] == [9001]


def test_upstream_ip_that_no_container_has():
    proxy = container("proxy", lines=[REFUSED.format(url="http://172.19.0.9:8000/")])
    api = container("api", networks=[("app_default", "172.19.0.4", ())], listeners=[("0.0.0.0", 8000)])
    joins.join([proxy, api])
    [up] = proxy["upstreams"]
    assert up["target"] is None and up["diagnosis"] == "no-such-ip"
    assert up["listening_peers"] == ["api"]


def test_psycopg2_names_the_host_on_the_line_after_refused():
    app = container("app", lines=[
        "psycopg2.OperationalError: could not connect to server: Connection refused",
        '\tIs the server running on host "db" (172.19.0.3) and accepting',
        "\tTCP/IP connections on port 5432?"])
    db = container("db", networks=[("app_default", "172.19.0.3", ())], running=False)
    joins.join([app, db])
    [up] = app["upstreams"]
    assert (up["host"], up["tcp_port"], up["target"]["name"], up["diagnosis"]) == ("db", None, "db", "target-not-running")


def test_client_lines_name_host_and_port():
    lines = [
        "Error: connect ECONNREFUSED 172.19.0.3:5432",
        'psycopg.OperationalError: connection failed: connection to server at "db" (172.19.0.3), port 5432 failed: Connection refused',
        "redis.exceptions.ConnectionError: Error 111 connecting to cache:6379. Connection refused.",
        "wget: can't connect to remote host (172.19.0.3): Connection refused",
        "dial tcp 172.19.0.3:5432: connect: connection refused",
        "requests.exceptions.ConnectionError: HTTPConnectionPool(host='api', port=8000): Max retries exceeded with url: / "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new "
        "connection: [Errno 111] Connection refused'))",
    ]
    app = container("app", lines=lines)
    db = container("db", networks=[("app_default", "172.19.0.3", ("db",))], listeners=[("0.0.0.0", 5432)])
    joins.join([app, db])
    got = [(u["via"], u["host"], u["tcp_port"], u["count"], u["target"] and u["target"]["name"]) for u in app["upstreams"]]
    assert got == [
        ("client", "db", 5432, 1, "db"),              # libpq: the name, matched by its IP
        ("client", "cache", 6379, 1, None),
        ("client", "172.19.0.3", None, 1, "db"),      # BusyBox wget names no port
        ("client", "172.19.0.3", 5432, 2, "db"),      # node and Go lines: one upstream, counted twice
        ("client", "api", 8000, 1, None),
    ]
    assert app["upstreams"][0]["diagnosis"] == "target-listening"
    assert app["upstreams"][2]["diagnosis"] == "target-found"
    assert app["upstreams"][1]["diagnosis"] == "no-such-name"


@pytest.mark.parametrize("line, name", [
    ('2026/11/27 08:47:11 [emerg] 1#1: host not found in upstream "api" in /etc/nginx/sites-enabled/default:1', "api"),
    ('nginx: [emerg] host not found in upstream "api:8000" in /etc/nginx/conf.d/default.conf:7', "api"),
    ("Error: getaddrinfo ENOTFOUND api", "api"),
    ("Error: getaddrinfo EAI_AGAIN api:8000", "api"),
    ("curl: (6) Could not resolve host: api", "api"),
    ("wget: bad address 'api:8000'", "api"),
    ("dial tcp: lookup api on 127.0.0.11:53: no such host", "api"),
    ('psycopg2.OperationalError: could not translate host name "api" to address: Name or service not known', "api"),
    ("urllib3.exceptions.NameResolutionError: <urllib3.connection.HTTPConnection object at 0x7f>: Failed to resolve 'api' ([Errno -2] Name or service not known)", "api"),
    ("Unknown MySQL server host 'api' (-2)", "api"),
    ("java.net.UnknownHostException: api", "api"),
    ("2026/11/27 09:00:00 [error] 7#7: *3 api could not be resolved (3: Host not found)", "api"),
])
def test_unresolved_names_from_real_lines(line, name):
    _, unresolved = joins.references([line])
    assert [u["name"] for u in unresolved] == [name]


def test_nameless_resolution_errors_name_nothing():
    _, unresolved = joins.references(["urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>",
                                      "socket.gaierror: [Errno -2] Name or service not known"])
    assert unresolved == []


def test_name_on_the_default_bridge():
    client = container("client", networks=[("bridge", "172.17.0.5", ())], lines=["wget: bad address 'api:8000'"])
    api = container("api", networks=[("bridge", "172.17.0.6", ())], listeners=[("0.0.0.0", 8000)])
    joins.join([client, api])
    [entry] = client["unresolved"]
    assert entry["exists"] is True and entry["diagnosis"] == "default-bridge"
    assert entry["best"]["shared_networks"] == ["bridge"] and entry["best"]["shared_user_networks"] == []
    assert entry["user_networks"] == []


def test_name_on_another_network_and_by_alias_or_service():
    client = container("client", networks=[("front", "172.20.0.2", ())],
                       lines=["Error: getaddrinfo ENOTFOUND db", "Error: getaddrinfo ENOTFOUND cache"])
    db = container("app-db-1", networks=[("back", "172.21.0.2", ("db", "0123456789ab"))], service="db")
    cache = container("cache", networks=[("front", "172.20.0.3", ())], running=False)
    joins.join([client, db, cache])
    by_name = {u["name"]: u for u in client["unresolved"]}
    assert by_name["db"]["diagnosis"] == "different-networks"
    assert by_name["db"]["best"]["name"] == "app-db-1" and by_name["db"]["best"]["matched_by"] in ("service", "alias")
    assert by_name["cache"]["diagnosis"] == "not-running"


def test_name_that_resolves_now_no_such_container_and_outside_names():
    client = container("client", lines=[
        "Error: getaddrinfo ENOTFOUND api", "Error: getaddrinfo ENOTFOUND realtim", "Error: getaddrinfo ENOTFOUND pypi.org"])
    api = container("api", networks=[("app_default", "172.19.0.3", ())], listeners=[("0.0.0.0", 8000)])
    realtime = container("realtime", networks=[("app_default", "172.19.0.4", ())])
    joins.join([client, api, realtime])
    by_name = {u["name"]: u for u in client["unresolved"]}
    assert by_name["api"]["diagnosis"] == "resolvable-now"
    assert by_name["realtim"]["diagnosis"] == "no-such-container"
    assert by_name["realtim"]["similar"] == ["realtime"]
    assert by_name["pypi.org"]["diagnosis"] == "external-name"


def test_no_logs_makes_the_join_facts_unknown():
    quiet = container("quiet", logs=False)
    joins.join([quiet])
    assert quiet["upstreams"] == [] and quiet["unresolved"] == []
    assert quiet["unknown"]["upstreams"].startswith("unavailable")
    assert quiet["unknown"]["unresolved"].startswith("unavailable")


def test_repeats_are_counted_and_the_newest_line_kept():
    lines = [REFUSED.format(url="http://172.19.0.3:8000/").replace("*2", f"*{i}") for i in range(5)]
    proxy = container("proxy", lines=lines)
    joins.join([proxy])
    [up] = proxy["upstreams"]
    assert up["count"] == 5 and "*4 connect()" in up["line"]


def test_peers_from_the_list_call_are_found_but_not_diagnosed():
    summary = {  # GET /containers/json, as Docker 20.10 returns it for a compose service
        "Id": "84a5b613993f" + "0" * 52, "Names": ["/shop-api-1"], "State": "running",
        "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "api"},
        "NetworkSettings": {"Networks": {"shop_default": {"IPAddress": "172.19.0.3", "Aliases": None}}},
    }
    peer = joins.peer_from_summary(summary)
    proxy = container("proxy", networks=[("shop_default", "172.19.0.2", ())],
                      lines=[REFUSED.format(url="http://172.19.0.3:8000/"), "Error: getaddrinfo ENOTFOUND api"])
    joins.join([proxy], peers=[peer])
    [up] = proxy["upstreams"]
    assert up["target"]["name"] == "shop-api-1" and up["diagnosis"] == "target-sockets-unknown"
    [name] = proxy["unresolved"]
    assert name["best"]["matched_by"] == "service" and name["diagnosis"] == "resolvable-now"
    assert "upstreams" not in peer


# ---- the rules over joined facts ---------------------------------------------------------------

def test_rules_name_the_upstream_that_listens_on_loopback_and_stay_silent_generically():
    proxy = container("proxy", lines=[REFUSED.format(url="fastcgi://172.19.0.3:9000")])
    php = container("php", networks=[("app_default", "172.19.0.3", ())], listeners=[("127.0.0.1", 9000)])
    found = findings_for([proxy, php], "proxy")
    assert [f["rule"] for f in found] == ["dockdoc/upstream-refused-upstream-loopback"]
    assert "php, which listens on 127.0.0.1:9000 only" in found[0]["message"]
    assert "listen = 9000" in found[0]["fix"]


def test_rules_without_a_join_still_say_upstream_refused():
    proxy = container("proxy", lines=[REFUSED.format(url="fastcgi://172.19.0.3:9000")])
    found = [f for f in evaluate({"host": {}, "containers": [proxy]}, RULES).findings]
    assert [f["rule"] for f in found] == ["dockdoc/upstream-refused"]


def test_dns_rules_over_the_join():
    client = container("client", networks=[("bridge", "172.17.0.5", ())], running=False,
                       lines=['2026/11/27 08:47:11 [emerg] 1#1: host not found in upstream "api" in /etc/nginx/sites-enabled/default:1'])
    api = container("api", networks=[("bridge", "172.17.0.6", ())], listeners=[("0.0.0.0", 8000)])
    found = findings_for([client, api], "client")
    rules = {f["rule"] for f in found}
    assert "dockdoc/dns-default-bridge" in rules and "dockdoc/dns-resolution" not in rules
    [finding] = [f for f in found if f["rule"] == "dockdoc/dns-default-bridge"]
    assert "docker network connect appnet client" in finding["fix"] and "docker network connect appnet api" in finding["fix"]


def test_a_named_host_with_a_loopback_ip_is_loopback():
    from doctor.collect import joins

    app = {"id": "a" * 64, "short_id": "a" * 12, "name": "app", "display_name": "app", "state": {"running": True},
           "networks": [{"name": "net", "ip": "172.18.0.5", "aliases": []}], "listeners": [], "reachable_ports": [],
           "logs": {"lines": ['psycopg2.OperationalError: connection to server at "localhost" (127.0.0.1), '
                              'port 5432 failed: Connection refused',
                              '\tIs the server running on that host and accepting TCP/IP connections?']},
           "unknown": {}}
    joins.join([app])
    assert app["upstreams"], app["upstreams"]
    assert all(u["loopback"] for u in app["upstreams"]), app["upstreams"]
