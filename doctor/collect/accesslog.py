r"""Structured facts from the access lines in a container's log tail: what the app answered, to what.

`summarize(lines)` recognises the access-log formats the common servers print by default:

    werkzeug (Flask)   172.17.0.1 - - [27/Nov/2026 08:22:30] "POST /process HTTP/1.1" 400 -
    Django runserver   [27/Nov/2026 08:46:56] "GET / HTTP/1.1" 200 3
    gunicorn (default --access-logformat), nginx/Apache "combined" and "common"
                       172.17.0.1 - - [27/Nov/2026:08:43:06 +0000] "GET / HTTP/1.1" 200 3 "-" "curl/7.88.1"
    uvicorn            INFO:     172.17.0.1:36050 - "GET / HTTP/1.1" 200 OK

(gunicorn's default access format is nginx's combined one, so the two are reported as one format,
"combined".) ANSI colour codes (werkzeug and uvicorn colour their lines when run with a TTY) are
removed first. Lines whose User-Agent starts with `dockdoc-probe` are dockdoc's own `probe` requests
and are left out, so that probing a container never changes its diagnosis.

The result, stored by the collector as `container.http`:

    {
      "window_lines": int,        lines looked at (the log tail; the summary describes only that)
      "requests": int,            access lines recognised (malformed ones included, dockdoc's own left out)
      "formats": {"werkzeug"|"django"|"combined"|"uvicorn": count},
      "by_status": {"200": 3, "400": 6, ...},   keys are strings (they are JSON object keys)
      "client_errors": int,       4xx answers
      "server_errors": int,       5xx answers
      "routes": [ROUTE, ...],     one per (method, path, status), ordered by their last line, newest last;
                                  at most MAX_ROUTES, the newest kept
      "latest_errors": [str],     the last line of each 4xx/5xx status, newest last
      "malformed": int,           access lines whose request is not HTTP (TLS handshakes, binary garbage;
                                  also the pieces of a raw ClientHello line that the log reader split)
      "tls_handshakes": int,      lines that show a TLS ClientHello (\\x16\\x03...) sent to this plain-HTTP server
      "last_malformed": str|null, the newest such line
      "probe_requests": int,      dockdoc-probe lines left out
    }
    ROUTE = {"method": "POST", "path": "/process" (query string removed), "status": 400 (int),
             "count": 6 (lines with this method, path and status),
             "total": 6 (lines with this method and path, any status),
             "share": 1.0 (count / total, rounded to 2 places),
             "last_line": the newest such line, "format": "werkzeug"}

Lines are cut to MAX_LINE characters before matching and quoted lines to MAX_QUOTE. The patterns
are fixed (not from rule packs) and written so that Python's `re` cannot backtrack more than
linearly: every quantified piece consumes a character class that the piece after it cannot start
with (`\S+` before a space, `[^"\\]|\\.` whose two branches never match the same character), and
the one greedy `.*` (the loose request) is followed by `" NNN \S+$`, whose `\S+` runs end at the
next space, so the runs tried are disjoint. `re` is used rather than RE2 because these patterns run
on every log line of every container: through its Python wrapper RE2 costs ~10x more per line
(50 us against 5 us), which was most of a 200-container scan. tests/test_accesslog.py checks the
bound on lines built to make a backtracking matcher explode.
"""

from __future__ import annotations

import re

MAX_LINE = 16384  # characters of a line considered; an access line longer than this is not one
MAX_QUOTE = 500  # characters of a line kept in the facts (evidence, not archives)
MAX_ROUTES = 50
PROBE_AGENT = "dockdoc-probe"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# The common prefix: client, ident, user, [time]. werkzeug's time is `27/Nov/2026 08:22:30`,
# combined's `27/Nov/2026:08:43:06 +0000`; Django's runserver prints only `[time]`.
# The quoted request is tried twice: first as a properly escaped string (nginx escapes `"` as \x22,
# so the referer and agent that follow can be told apart), then greedily up to the last `" NNN `,
# for servers that print the raw request line (werkzeug shows TLS bytes and quotes as they came).
_PREFIX = r'^(?:(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) )?\[(?P<time>[^\]]{1,64})\] '
_COMBINED_STRICT = re.compile(
    _PREFIX + r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<size>\S+)'
    r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?'
)
_COMBINED_LOOSE = re.compile(_PREFIX + r'"(?P<request>.*)" (?P<status>\d{3}) (?P<size>\S+)$')
# uvicorn: `INFO:     172.17.0.1:36050 - "GET / HTTP/1.1" 200 OK` (the client is host:port).
_UVICORN = re.compile(
    r'(?:^|\s)(?P<client>\[?[0-9A-Fa-f.:]+\]?:\d+|[\w.-]+:\d+) - "(?P<request>[^"]*)" (?P<status>\d{3})(?:\s|$)'
)
_REQUEST = re.compile(r'^(?P<method>[A-Z][A-Z0-9_-]{0,19}) (?P<target>\S+)(?: HTTP/(?P<version>[0-9.]{1,4}))?$')
_WERKZEUG_TIME = re.compile(r'^\d{2}/\w{3}/\d{4} \d{2}:\d{2}:\d{2}$')
# A TLS record header (handshake 0x16, version 3.x) where an HTTP request line should start,
# raw (werkzeug, http.server before 3.12) or escaped (nginx, Python 3.12+).
_TLS_PREFIXES = ("\x16\x03", "\\x16\\x03", "\\x16\\x03".upper())


# Control characters (a TLS ClientHello logged raw) are shown as \\xNN, never sent to a terminal.
_PRINTABLE = {code: f"\\x{code:02x}" for code in [*range(0, 9), *range(10, 32), 127]}


def _quote(line: str) -> str:
    line = line if len(line) <= MAX_QUOTE else line[: MAX_QUOTE - 1] + "…"
    return line.translate(_PRINTABLE)


def parse_line(line: str) -> dict | None:
    """One access line as {format, client, method, path, status, request, agent, malformed, tls},
    or None when the line is not an access line."""
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE]
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    if '"' not in line:
        return None
    found = None
    fmt = None
    agent = None
    if "[" in line:
        found = _COMBINED_STRICT.match(line) or _COMBINED_LOOSE.match(line)  # both start at ^
        if found:
            client, time_, agent = found.group("client", "time", "agent") if found.re is _COMBINED_STRICT \
                else (*found.group("client", "time"), None)
            if client is None:
                fmt = "django"
            elif _WERKZEUG_TIME.match(time_):
                fmt = "werkzeug"
            else:
                fmt = "combined"
    if found is None and " - \"" in line:
        found = _UVICORN.search(line)
        fmt = "uvicorn" if found else None
    if found is None:
        return None
    client, request, status = found.group("client", "request", "status")
    request = request or ""
    parsed = _REQUEST.match(request)
    entry = {
        "format": fmt,
        "client": client,
        "status": int(status),
        "request": request,
        "agent": agent,
        "method": None,
        "path": None,
        "malformed": parsed is None,
        "tls": request.startswith(_TLS_PREFIXES),
    }
    if parsed:
        target = parsed.group("target")
        entry["method"] = parsed.group("method")
        entry["path"] = target.split("?", 1)[0] or "/"
    return entry


def _tls_fragment(line: str) -> bool:
    """A piece of a TLS ClientHello logged raw: the log reader splits such a line at the control
    characters in it, so the access line's end may be on another "line"."""
    index = line.find('"\x16\x03')
    return index >= 0


def summarize(lines: list[str] | None) -> dict:
    """Summarise the access lines among `lines` (oldest first, as `docker logs` gives them)."""
    lines = lines or []
    by_status: dict[str, int] = {}
    formats: dict[str, int] = {}
    routes: dict[tuple, dict] = {}
    totals: dict[tuple, int] = {}
    latest_error: dict[int, tuple[int, str]] = {}
    requests = client_errors = server_errors = malformed = tls = probe = 0
    last_malformed = None
    for index, raw in enumerate(lines):
        if not isinstance(raw, str):
            continue
        entry = parse_line(raw)
        if entry is None:
            if _tls_fragment(raw[:MAX_LINE]):
                tls += 1
                malformed += 1
                last_malformed = raw
            continue
        if (entry["agent"] or "").startswith(PROBE_AGENT):
            probe += 1
            continue
        requests += 1
        formats[entry["format"]] = formats.get(entry["format"], 0) + 1
        status = entry["status"]
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if 400 <= status < 500:
            client_errors += 1
        elif 500 <= status < 600:
            server_errors += 1
        if status >= 400:
            latest_error[status] = (index, raw)
        if entry["malformed"]:
            malformed += 1
            tls += entry["tls"]
            last_malformed = raw
            continue
        key = (entry["method"], entry["path"], status)
        totals[key[:2]] = totals.get(key[:2], 0) + 1
        route = routes.pop(key, None)  # re-inserted: dict order is then "by last line"
        if route is None:
            route = {"method": entry["method"], "path": entry["path"], "status": status, "count": 0,
                     "total": 0, "share": 0.0, "last_line": "", "format": entry["format"]}
        route["count"] += 1
        route["last_line"] = raw  # quoted below, once, for the routes that are kept
        routes[key] = route
    ordered = list(routes.values())[-MAX_ROUTES:]
    for route in ordered:
        route["total"] = totals[(route["method"], route["path"])]
        route["share"] = round(route["count"] / route["total"], 2)
        route["last_line"] = _quote(route["last_line"])
    return {
        "window_lines": len(lines),
        "requests": requests,
        "formats": formats,
        "by_status": dict(sorted(by_status.items())),
        "client_errors": client_errors,
        "server_errors": server_errors,
        "routes": ordered,
        "latest_errors": [_quote(line) for _, line in sorted(latest_error.values())],
        "malformed": malformed,
        "tls_handshakes": tls,
        "last_malformed": _quote(last_malformed) if last_malformed is not None else None,
        "probe_requests": probe,
    }
