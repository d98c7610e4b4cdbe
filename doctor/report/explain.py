"""`dockdoc explain`: one container in depth, as text."""

from __future__ import annotations

from tabulate import tabulate

from doctor import facts
from doctor.report.table import finding_text, paint

LOG_LINES_SHOWN = 15


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _state_lines(c: dict) -> list[str]:
    state, restart = c["state"], c.get("restart") or {}
    lines = [f"status:   {state.get('status')}"]
    if state.get("running"):
        lines[-1] += f", up {_duration(state.get('uptime_seconds'))} (pid {state.get('pid')})"
    elif state.get("started_at"):
        lines[-1] += f", ran {_duration(state.get('ran_seconds'))}, finished {state.get('finished_at')}"
    if not state.get("running") or state.get("restarting"):
        lines.append(f"exit:     {state.get('exit_code')} = {state.get('exit_meaning')}"
                     + ("; OOM-killed" if state.get("oom_killed") else ""))
    if state.get("error"):
        lines.append(f"error:    {state['error']}")
    lines.append(f"restarts: {restart.get('count', 0)} (policy: {restart.get('policy', 'no')}"
                 + (f", max {restart['max_retry']}" if restart.get("max_retry") else "") + ")")
    if c.get("memory_limit"):
        lines.append(f"memory:   limit {c.get('memory_limit_mib')} MiB")
    return lines


def _health_lines(c: dict) -> list[str]:
    health = c.get("health")
    if not health:
        return ["health:   no health check"]
    lines = [f"health:   {health['status']} (failing streak {health.get('failing_streak', 0)}); "
             f"check: {' '.join(health.get('test') or [])}"]
    for entry in (health.get("log") or [])[-3:]:
        output = (entry.get("output") or "").replace("\n", " | ")[:160]
        lines.append(f"          {entry.get('start', '')[:19]} exit {entry.get('exit_code')}: {output}")
    return lines


def _endpoint(binding: dict) -> str:
    host = binding["host_ip"]
    return f"[{host}]:{binding['host_port']}" if ":" in host else f"{host}:{binding['host_port']}"


def _ports_table(c: dict) -> str:
    if not c["ports"]:
        return "ports:    none exposed, published or listening"
    rows = []
    for p in c["ports"]:
        published = ", ".join(_endpoint(b) for b in p["published"]) or (
            "requested " + ", ".join(_endpoint(b) for b in p["requested"]) if p["requested"] else "-")
        if p["listeners"] is None:
            listening = "unknown"
        else:
            listening = ", ".join(l["address"] for l in p["listeners"]) or "nothing"
        rows.append([f"{p['port']}/{p['proto']}", "yes" if p["exposed"] else "no", published, listening])
    table = tabulate(rows, headers=["PORT", "EXPOSE", "PUBLISHED ON HOST", "LISTENING ON"], tablefmt="simple",
                     disable_numparse=True)
    note = ""
    if c["listeners"] is None:
        note = f"\n(sockets: {c.get('listeners_source')})"
    else:
        note = f"\n(sockets from {c.get('listeners_source')})"
    return table + note


OK, BROKEN, UNKNOWN, SKIP = "ok", "BROKEN", "unknown", "-"


def request_path(c: dict, port: dict) -> list[tuple[str, str, str]]:
    """The layers a request to one port crosses, each (layer, status, detail), outside in:
    host binding, Docker's forwarding, the container, the listener and its address, the app's
    answers in its log, and (after `--probe`) what a client really got."""
    layers = []
    state = c.get("state") or {}
    published = port.get("published") or []
    if published:
        where = ", ".join(_endpoint(b) for b in published)
        only_local = all(facts.is_loopback(b["host_ip"]) for b in published)
        layers.append(("host binding", OK, where + (" (this host only)" if only_local else "")))
    elif port.get("requested"):
        wanted = ", ".join(_endpoint(b) for b in port["requested"])
        conflict = port.get("host_conflict")
        why = f"host port {conflict['host_port']} is taken" if conflict else "the container is not running"
        layers.append(("host binding", BROKEN, f"{wanted} requested but not bound: {why}"))
    elif c.get("network_mode") == "host":
        layers.append(("host binding", OK, "host network: the app's own port is the host's"))
    else:
        layers.append(("host binding", BROKEN, "not published: the host cannot reach this port "
                                               f"(-p {port['port']}:{port['port']})"))
    layers.append(("docker forwarding", OK if state.get("running") else BROKEN,
                   f"to container port {port['port']}/{port['proto']}" if state.get("running")
                   else f"nothing to forward to: the container is {state.get('status')}"))
    listeners = port.get("listeners")
    if not state.get("running"):
        layers.append(("listener", SKIP, "container not running"))
    elif listeners is None:
        layers.append(("listener", UNKNOWN, c.get("listeners_source") or "sockets not visible"))
    elif not listeners:
        others = c.get("reachable_ports") or []
        detail = f"nothing listens on {port['port']}" + (f"; the app listens on {', '.join(map(str, others))}"
                                                          if others else "; nothing listens at all")
        layers.append(("listener", BROKEN, detail))
    elif not port.get("reachable_listeners"):
        addresses = ", ".join(l["endpoint"] if "endpoint" in l else l["address"] for l in listeners)
        layers.append(("listener", BROKEN, f"{addresses} only: loopback, unreachable from outside the container"))
    else:
        addresses = ", ".join(l.get("endpoint") or l["address"] for l in port["reachable_listeners"])
        layers.append(("listener", OK, addresses))
    http = c.get("http")
    if http is None:
        layers.append(("app answers", UNKNOWN, c.get("logs_source") or "logs not readable"))
    elif not http.get("requests"):
        layers.append(("app answers", SKIP, "no access lines in the log tail"))
    else:
        errors = http.get("client_errors", 0) + http.get("server_errors", 0)
        statuses = ", ".join(f"{code}: {count}" for code, count in sorted(http.get("by_status", {}).items()))
        verdict = BROKEN if errors and errors * 2 >= http["requests"] else OK
        layers.append(("app answers", verdict, f"{http['requests']} requests in the log tail ({statuses})"))
    probe = port.get("probe")
    if probe and not probe.get("skipped"):
        reply = probe.get("reply") or {}
        if probe.get("connect") != "accepted":
            layers.append(("client gets", BROKEN, f"connect {probe.get('connect')} on {probe.get('target')}"))
        elif reply.get("error"):
            layers.append(("client gets", BROKEN, f"connected to {probe.get('target')}, then {reply['error']}"))
        else:
            status = reply.get("status")
            layers.append(("client gets", BROKEN if status and status >= 400 else OK,
                           f"HTTP {status} {reply.get('reason') or ''} from {probe.get('target')}".strip()))
    return layers


def _path_lines(c: dict, color: bool) -> list[str]:
    ports = [p for p in c.get("ports") or [] if p.get("published") or p.get("requested") or p.get("exposed")]
    out = []
    for port in ports:
        out.append(f"request path to {port['port']}/{port['proto']}:")
        first_broken = True
        for layer, status, detail in request_path(c, port):
            mark = {OK: "ok", BROKEN: "XX", UNKNOWN: "??", SKIP: "--"}[status]
            note = ""
            if status == BROKEN and first_broken:
                note, first_broken = "   <- first broken layer", False
                mark = paint(mark, "error", color, bold=True)
            out.append(f"  [{mark}] {layer:<17} {detail}{note}")
    return out


def _log_lines(c: dict) -> list[str]:
    logs = c.get("logs")
    if logs is None:
        return [f"logs:     {c.get('logs_source')}"]
    lines = logs.get("lines") or []
    if not lines:
        return ["logs:     (empty)"]
    out = [f"logs:     last {min(len(lines), LOG_LINES_SHOWN)} of {len(lines)} lines read"]
    times = logs.get("times") or [None] * len(lines)
    for stamp, line in list(zip(times, lines))[-LOG_LINES_SHOWN:]:
        out.append(f"  {(stamp or '')[:19]}  {line[:200]}")
    return out


def render(c: dict, findings: list[dict], color: bool = False) -> str:
    header = f"{c.get('display_name') or c['name']}  {c['short_id'] if 'short_id' in c else c['id'][:12]}  image {c.get('image')}"
    parts = [paint(header, None, color), "=" * min(len(header), 100)]
    parts += _state_lines(c)
    parts += _health_lines(c)
    parts.append("")
    parts.append(_ports_table(c))
    path = _path_lines(c, color)
    if path:
        parts.append("")
        parts += path
    parts.append("")
    parts += _log_lines(c)
    parts.append("")
    if findings:
        parts.append(f"findings ({len(findings)}):")
        for f in findings:
            parts.append(f"- {paint(f['severity'].upper(), f['severity'], color, bold=True)} {f['cause']} ({f['rule']})")
            parts.extend("  " + line for line in finding_text(f).splitlines())
    else:
        unknown = c.get("unknown") or {}
        parts.append("findings: none" + (f" (not checked: {', '.join(sorted(set(unknown.values())))})" if unknown else ""))
    return "\n".join(parts)
