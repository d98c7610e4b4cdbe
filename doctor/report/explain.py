"""`dockdoc explain`: one container in depth, as text."""

from __future__ import annotations

from tabulate import tabulate

from doctor.report.table import _cell, paint

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
    parts.append("")
    parts += _log_lines(c)
    parts.append("")
    if findings:
        parts.append(f"findings ({len(findings)}):")
        for f in findings:
            parts.append(f"- {paint(f['severity'].upper(), f['severity'], color, bold=True)} {f['cause']} ({f['rule']})")
            parts.extend("  " + line for line in _cell(f).splitlines())
    else:
        unknown = c.get("unknown") or {}
        parts.append("findings: none" + (f" (not checked: {', '.join(sorted(set(unknown.values())))})" if unknown else ""))
    return "\n".join(parts)
