"""The access-log summary, on lines exactly as the real servers print them (captured from the
Debian test image: werkzeug 2.2, gunicorn 20.1, uvicorn 0.17, Django 3.2 runserver, nginx 1.22)."""

from __future__ import annotations

import time

import pytest

from doctor.collect import accesslog

WERKZEUG = [
    "WARNING: This is a development server. Do not use it in a production deployment. Use a production WSGI server instead.",
    " * Running on all addresses (0.0.0.0)",
    " * Running on http://127.0.0.1:5000",
    "Press CTRL+C to quit",
    '172.17.0.1 - - [27/Nov/2026 08:43:06] "GET / HTTP/1.1" 200 -',
    '172.17.0.1 - - [27/Nov/2026 08:43:06] "GET /missing?x=1 HTTP/1.1" 404 -',
    '172.17.0.1 - - [27/Nov/2026 08:43:07] "POST /process HTTP/1.1" 400 -',
    '172.17.0.1 - - [27/Nov/2026 08:43:08] "POST /process HTTP/1.1" 400 -',
    '172.17.0.1 - - [27/Nov/2026 08:43:09] "POST /process?debug=1 HTTP/1.1" 400 -',
    '172.17.0.1 - - [27/Nov/2026 08:43:10] "POST /process HTTP/1.1" 200 -',
]
GUNICORN = [
    "[2026-11-27 08:43:03 +0000] [1] [INFO] Starting gunicorn 20.1.0",
    "[2026-11-27 08:43:03 +0000] [1] [INFO] Listening at: http://0.0.0.0:8000 (1)",
    '172.17.0.1 - - [27/Nov/2026:08:43:06 +0000] "GET / HTTP/1.1" 200 3 "-" "curl/7.88.1"',
    '172.17.0.1 - - [27/Nov/2026:08:43:06 +0000] "POST /predict HTTP/1.1" 500 0 "-" "python-requests/2.31"',
]
UVICORN = [
    "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)",
    'INFO:     172.17.0.1:36050 - "GET / HTTP/1.1" 200 OK',
    'INFO:     172.17.0.1:36062 - "POST /sequences HTTP/1.1" 422 Unprocessable Entity',
    # uvicorn with a TTY colours its lines
    '\x1b[32mINFO\x1b[0m:     172.17.0.1:36070 - "\x1b[1mPOST /sequences HTTP/1.1\x1b[0m" \x1b[31m422 Unprocessable Entity\x1b[0m',
]
NGINX = [
    '2026/11/27 08:44:30 [error] 11#11: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 172.17.0.1, server: , request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:3001/", host: "127.0.0.1:18104"',
    '172.17.0.1 - - [27/Nov/2026:08:44:30 +0000] "GET / HTTP/1.1" 502 157 "-" "curl/7.88.1"',
    '172.17.0.1 - - [27/Nov/2026:08:44:30 +0000] "POST /ok HTTP/1.1" 413 183 "-" "curl/7.88.1"',
    r'172.17.0.1 - - [27/Nov/2026:08:44:40 +0000] "\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03m\xC5\xBFxc" 400 157 "-" "-"',
    '172.17.0.1 - - [27/Nov/2026:08:44:41 +0000] "GET / HTTP/1.1" 200 7 "-" "dockdoc-probe/0.1.0"',
]
DJANGO = [
    "Invalid HTTP_HOST header: '192.168.99.100:8000'. You may need to add '192.168.99.100' to ALLOWED_HOSTS.",
    "Bad Request: /",
    '[27/Nov/2026 02:56:34] "GET / HTTP/1.1" 400 55433',
    '[27/Nov/2026 02:56:34] "GET / HTTP/1.1" 200 3',
]


def test_werkzeug_routes_are_grouped_by_method_path_and_status_newest_last():
    summary = accesslog.summarize(WERKZEUG)
    assert summary["requests"] == 6
    assert summary["formats"] == {"werkzeug": 6}
    assert summary["by_status"] == {"200": 2, "400": 3, "404": 1}
    assert summary["client_errors"] == 4 and summary["server_errors"] == 0
    routes = [(r["method"], r["path"], r["status"], r["count"], r["total"]) for r in summary["routes"]]
    # the query string is not part of the route; the 200 on /process came last, so it is last
    assert routes == [("GET", "/", 200, 1, 1), ("GET", "/missing", 404, 1, 1),
                      ("POST", "/process", 400, 3, 4), ("POST", "/process", 200, 1, 4)]
    rejected = summary["routes"][2]
    assert rejected["share"] == 0.75
    assert rejected["last_line"] == WERKZEUG[8]
    assert rejected["format"] == "werkzeug"
    # the last line of each error status, newest last
    assert summary["latest_errors"] == [WERKZEUG[5], WERKZEUG[8]]
    assert summary["malformed"] == 0 and summary["tls_handshakes"] == 0


def test_gunicorn_default_access_format_is_combined():
    summary = accesslog.summarize(GUNICORN)
    assert summary["formats"] == {"combined": 2}
    assert summary["server_errors"] == 1
    assert summary["latest_errors"] == [GUNICORN[3]]


def test_uvicorn_lines_with_and_without_colour():
    summary = accesslog.summarize(UVICORN)
    assert summary["formats"] == {"uvicorn": 3}
    route = summary["routes"][-1]
    assert (route["method"], route["path"], route["status"], route["count"]) == ("POST", "/sequences", 422, 2)


def test_nginx_combined_with_a_tls_handshake_and_the_probe_left_out():
    summary = accesslog.summarize(NGINX)
    assert summary["requests"] == 3  # the error line is no access line; the probe's request is left out
    assert summary["probe_requests"] == 1
    assert summary["by_status"] == {"400": 1, "413": 1, "502": 1}
    assert summary["tls_handshakes"] == 1 and summary["malformed"] == 1
    assert summary["last_malformed"].startswith('172.17.0.1 - - [27/Nov/2026:08:44:40 +0000] "\\x16\\x03')
    # a TLS handshake is not a route: app-rejected-request must not count it
    assert [r["status"] for r in summary["routes"]] == [502, 413]


def test_django_runserver_lines():
    summary = accesslog.summarize(DJANGO)
    assert summary["formats"] == {"django": 2}
    assert summary["by_status"] == {"200": 1, "400": 1}


def test_werkzeug_raw_tls_bytes_split_by_the_log_reader():
    # werkzeug on Python 3.11 logs the ClientHello raw; splitlines() cuts it at control characters.
    raw = ('172.17.0.1 - - [27/Nov/2026 08:47:26] code 400, message Bad request version (\'\\x00\\x04\')\n'
           '172.17.0.1 - - [27/Nov/2026 08:47:26] "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xb8oMYB\x1c'
           'tail\x1d\x1e" 400 -\n')
    summary = accesslog.summarize(raw.splitlines())
    assert summary["tls_handshakes"] == 1
    assert summary["routes"] == []
    # control characters never reach a terminal through the facts
    assert "\x16" not in summary["last_malformed"] and "\\x16\\x03" in summary["last_malformed"]


def test_unparsed_lines_and_empty_input():
    empty = accesslog.summarize([])
    assert empty["requests"] == 0 and empty["routes"] == [] and empty["by_status"] == {}
    assert accesslog.summarize(None)["window_lines"] == 0
    noise = ["Traceback (most recent call last):", '  File "app.py", line 3', "[1] [INFO] Booting worker", "",
             'request: "GET / HTTP/1.1"', 12345]
    assert accesslog.summarize(noise)["requests"] == 0


@pytest.mark.parametrize("line, expected", [
    ('172.17.0.1 - - [27/Nov/2026 08:43:06] "GET /a/b?c=d HTTP/1.1" 200 -', ("werkzeug", "GET", "/a/b", 200)),
    ('10.0.0.1 - alice [27/Nov/2026:08:43:06 +0000] "PUT /x HTTP/2.0" 201 0', ("combined", "PUT", "/x", 201)),
    ('INFO:     [::1]:5000 - "DELETE /item/1 HTTP/1.1" 204 No Content', ("uvicorn", "DELETE", "/item/1", 204)),
    ('[27/Nov/2026 08:46:56] "GET /admin/ HTTP/1.1" 400 143', ("django", "GET", "/admin/", 400)),
])
def test_parse_line(line, expected):
    entry = accesslog.parse_line(line)
    assert (entry["format"], entry["method"], entry["path"], entry["status"]) == expected


def test_routes_are_bounded_and_long_lines_are_cut():
    lines = [f'172.17.0.1 - - [27/Nov/2026 08:43:06] "GET /r{i} HTTP/1.1" 200 -' for i in range(500)]
    summary = accesslog.summarize(lines)
    assert len(summary["routes"]) == accesslog.MAX_ROUTES
    assert summary["routes"][-1]["path"] == "/r499"
    long_uri = "/" + "x" * 5000
    summary = accesslog.summarize([f'172.17.0.1 - - [27/Nov/2026 08:43:06] "GET {long_uri} HTTP/1.1" 414 -'])
    assert summary["by_status"] == {"414": 1}
    assert len(summary["latest_errors"][0]) == accesslog.MAX_QUOTE


def _hostile(size: int) -> list[str]:
    return [
        "1 - - [" + "]" * size,
        '1 - - [t] "' + '\\"' * (size // 2),
        '1 - - [t] "' + '" 200 x ' * (size // 8),
        'INFO: a:1 - "' + '"' * size,
        '[t] "' + "\\" * size + '" 200 -',
        '1 - - [t] "\x16\x03' + "\x16\x03" * (size // 8),
    ] * 20


def _fastest(lines: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        accesslog.summarize(lines)
        best = min(best, time.perf_counter() - start)
    return best


def test_hostile_lines_take_time_linear_in_their_length():
    """Lines built to make a backtracking matcher explode (runs of quotes, brackets, escapes). With
    RE2 the work grows with the length: 8x longer lines cost about 8x, where a quadratic matcher
    would cost 64x. A ratio within one run, not seconds."""
    small, large = _hostile(1000), _hostile(8000)
    ratio = _fastest(large) / _fastest(small)
    assert ratio < 24, ratio
