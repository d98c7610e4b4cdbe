"""The `dockdoc` command line: one small function per command, errors turned into one line."""

from __future__ import annotations

import enum
import os
import sys
import traceback
from typing import List, Optional

import typer

from doctor import __version__, diagnose, facts, options, report
from doctor.config import ConfigError
from doctor.engine import packs as pack_loader
from doctor.errors import DockdocError, RulePackError
from doctor.watch_cli import check_post, post_report
from doctor.watch_cli import register as register_watch

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    help="dockdoc: finds why a containerized service answers 400, resets or times out.\n\n"
         "Exit codes: 0 nothing at or above --fail-on, 1 findings at or above it, "
         "2 usage, configuration or Docker connection error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
rules_app = typer.Typer(help="List, show, validate and test rule packs.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

_state = {"debug": False}

Format = enum.Enum("Format", {name: name for name in report.FORMATS}, type=str)


def _version(value: bool):
    if value:
        typer.echo(f"dockdoc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    _state["debug"] = debug


def _collect(containers, running: bool, log_lines: int, use_exec: bool) -> dict:
    # Imported here so that `--from FILE` and the rules commands never need a Docker SDK connection.
    from doctor.collect import connection
    from doctor.collect import docker as collector

    api = connection.connect()
    if use_exec:
        typer.echo("dockdoc: --exec may run `cat /proc/net/tcp` inside containers whose sockets "
                   "cannot be read from this host", err=True)
    return collector.collect(api, containers, running_only=running,
                             options=collector.Options(log_lines=log_lines, use_exec=use_exec))


@app.command()
def scan(
    containers: Optional[List[str]] = typer.Argument(None, help="Names, ids or globs (default: all)."),
    running: bool = typer.Option(False, "--running", help="Only running containers."),
    fmt: Format = typer.Option("table", "--format", "-f", help="Output format."),
    min_severity: options.Severity = typer.Option(options.Severity.info, "--min-severity",
                                                  help="Hide findings below this."),
    fail_on: options.FailOn = typer.Option(options.FailOn.error, "--fail-on",
                                           help="Exit 1 when a finding is at or above this."),
    from_file: Optional[str] = typer.Option(None, "--from", metavar="FILE",
                                            help="Diagnose a snapshot file instead of the Docker daemon."),
    log_lines: int = options.LogLines,
    use_exec: bool = options.Exec,
    show_suppressed: bool = typer.Option(False, "--show-suppressed", help="List suppressed findings too."),
    rules: Optional[List[str]] = options.Rules,
    config: Optional[str] = options.Config,
    label_ignores: bool = options.LabelIgnores,
    probe: bool = typer.Option(False, "--probe",
                               help="Also send one TCP connect, one HTTP GET / and (when needed) a TLS "
                                    "handshake to each published port on this host, and diagnose with "
                                    "what came back (see `dockdoc probe`)."),
    probe_timeout: float = typer.Option(2.0, "--probe-timeout", min=0.1, max=60, help="Seconds per probe step."),
    post: Optional[List[str]] = options.Post,
    state: Optional[str] = options.State,
):
    """Diagnose containers: every container (running, exited, created) unless you name some."""
    setup = diagnose.load(rules, config, label_ignores)  # a broken pack or config fails before any Docker work
    if post:
        check_post(post, state)  # so do a bad URL and an unusable state path
    if probe and from_file:
        raise DockdocError("--probe sends traffic to running containers; it cannot be used with --from")
    if from_file:
        snapshot = facts.read_snapshot(from_file)
        snapshot["containers"] = _select_from_snapshot(snapshot["containers"], containers, running)
        source = f"snapshot:{from_file}"
    else:
        snapshot = _collect(containers, running, log_lines, use_exec)
        source = "docker"
        if probe:
            from doctor import probe as prober

            prober.probe_ports(snapshot, probe_timeout)
    result = diagnose.diagnose(snapshot, setup)
    document = report.build(snapshot, result.findings, result.unknown, min_severity.value, source,
                            result.suppressed, result.notices, show_suppressed)
    report.FORMATS[fmt.value](document, sys.stdout, _color(sys.stdout))
    if post:
        post_report(document, post, state, unknown=result.unknown, min_severity=min_severity.value,
                    complete=not containers and not running and not from_file)
    if fail_on != options.FailOn.never:
        floor = pack_loader.SEVERITY_RANK[fail_on.value]
        if any(pack_loader.SEVERITY_RANK[f["severity"]] >= floor for f in result.findings):
            raise typer.Exit(EXIT_FINDINGS)


def _select_from_snapshot(containers: list, patterns, running: bool) -> list:
    from doctor.collect.docker import select

    if running:
        containers = [c for c in containers if c["state"].get("running")]
    summaries = [{"Id": c["id"], "Names": ["/" + c["name"]], "Labels": c.get("labels") or {}, "_facts": c}
                 for c in containers]
    return [s["_facts"] for s in select(summaries, list(patterns or []))]


@app.command()
def snapshot(
    output: str = typer.Option(..., "--output", "-o", metavar="FILE", help="Where to write the JSON ('-' for stdout)."),
    containers: Optional[List[str]] = typer.Argument(None, help="Names, ids or globs (default: all)."),
    running: bool = typer.Option(False, "--running", help="Only running containers."),
    log_lines: int = options.LogLines,
    use_exec: bool = options.Exec,
):
    """Write the collected facts as JSON, to diagnose later with `scan --from FILE` (env values are never included)."""
    data = _collect(containers, running, log_lines, use_exec)
    facts.write_snapshot(data, output)
    if output != "-":
        typer.echo(f"wrote {len(data['containers'])} containers to {output}", err=True)


@app.command()
def explain(
    container: str = typer.Argument(..., help="Name, id or glob of the container."),
    from_file: Optional[str] = typer.Option(None, "--from", metavar="FILE", help="Read a snapshot instead of Docker."),
    log_lines: int = options.LogLines,
    use_exec: bool = options.Exec,
    probe: bool = typer.Option(False, "--probe", help="Also probe its published ports (see `dockdoc probe`)."),
    rules: Optional[List[str]] = options.Rules,
    config: Optional[str] = options.Config,
    label_ignores: bool = options.LabelIgnores,
):
    """One container in depth: state, exit code, restarts, health, ports joined with listeners, the path a
    request takes layer by layer (the first broken one marked), logs and findings."""
    from doctor.report import explain as explain_report

    setup = diagnose.load(rules, config, label_ignores)
    if from_file:
        data = facts.read_snapshot(from_file)
        data["containers"] = _select_from_snapshot(data["containers"], [container], False)
    else:
        data = _collect([container], False, log_lines, use_exec)
        if probe:
            from doctor import probe as prober

            prober.probe_ports(data)
    result = diagnose.diagnose(data, setup)
    color = _color(sys.stdout)
    for index, item in enumerate(data["containers"]):
        if index:
            typer.echo("")
        mine = [f for f in result.findings if f["container"]["id"] == item["id"]]
        typer.echo(explain_report.render(item, mine, color))


@app.command("probe")
def probe_command(
    containers: Optional[List[str]] = typer.Argument(None, help="Names, ids or globs (default: all running)."),
    timeout: float = typer.Option(2.0, "--timeout", min=0.1, max=60, help="Seconds per probe step."),
    fmt: Format = typer.Option("table", "--format", "-f", help="Output format."),
    log_lines: int = options.LogLines,
    rules: Optional[List[str]] = options.Rules,
    config: Optional[str] = options.Config,
):
    """Send real traffic to published ports on this host (one TCP connect, one HTTP GET /, a TLS
    handshake when needed) and show what a client gets, with the diagnosis that explains it.
    Opt-in: it is the one command that talks to your apps; it never leaves this host."""
    from tabulate import tabulate

    from doctor import probe as prober

    setup = diagnose.load(rules, config)
    snapshot = _collect(containers, True, log_lines, False)
    prober.probe_ports(snapshot, timeout)
    result = diagnose.diagnose(snapshot, setup)
    document = report.build(snapshot, result.findings, result.unknown, "info", "docker",
                            result.suppressed, result.notices)
    document["probes"] = [
        {"container": {"id": c["id"], "name": c["name"]}, "port": f"{p['port']}/{p['proto']}", **p["probe"]}
        for c in snapshot["containers"] for p in c["ports"] if p.get("probe")
    ]
    if fmt.value != "table":
        report.FORMATS[fmt.value](document, sys.stdout, _color(sys.stdout))
        return
    rows = [[row["container"]["name"], row["port"], row.get("target") or "-", _probe_outcome(row),
             {True: "yes", False: "no"}.get(row.get("tls"), "-")] for row in document["probes"]]
    if rows:
        typer.echo(tabulate(rows, headers=["CONTAINER", "PORT", "TARGET", "WHAT A CLIENT GETS", "TLS"],
                            disable_numparse=True) + "\n")
    else:
        typer.echo("no published TCP ports on running containers to probe\n")
    report.FORMATS["table"](document, sys.stdout, _color(sys.stdout))


def _probe_outcome(row: dict) -> str:
    if row.get("skipped"):
        return f"skipped: {row['skipped']}"
    if row.get("connect") != "accepted":
        return f"connect: {row.get('connect')}"
    reply = row.get("reply") or {}
    if reply.get("error"):
        return f"connected, then {reply['error']}"
    server = f", {reply['server']}" if reply.get("server") else ""
    return f"HTTP {reply.get('status')} {reply.get('reason') or ''}{server} in {reply.get('ttfb_ms')} ms".replace("  ", " ")


@rules_app.command("list")
def rules_list(
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    rules: Optional[List[str]] = options.Rules,
    config: Optional[str] = options.Config,
):
    """List every rule in effect (after the config's disable and severity): id, cause, severity, pack, title."""
    import json

    from tabulate import tabulate

    loaded = diagnose.load(rules, config).rules
    rows = [{"id": r.qualified_id, "cause": r.cause, "severity": r.severity, "pack": r.pack, "title": r.title}
            for r in loaded]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(tabulate([list(r.values()) for r in rows], headers=["ID", "CAUSE", "SEVERITY", "PACK", "TITLE"]))


@rules_app.command("show")
def rules_show(
    rule_id: str = typer.Argument(..., help="A rule id such as dockdoc/bind-loopback."),
    rules: Optional[List[str]] = options.Rules,
    config: Optional[str] = options.Config,
):
    """Show one rule: where it comes from, its condition, message, evidence, fix and examples."""
    import yaml

    loaded = diagnose.load(rules, config).rules
    matches = [r for r in loaded if r.qualified_id == rule_id or r.id == rule_id]
    if not matches:
        raise DockdocError(f"no rule {rule_id!r}", "`dockdoc rules list` shows the ids")
    for rule in matches:
        source = f"{rule.origin}:{rule.line}" if rule.line else rule.origin
        typer.echo(f"{rule.qualified_id}  ({rule.severity}, cause {rule.cause})\n{rule.title}\nfrom {source}")
        raw = _raw_rule(rule)
        if raw is not None:
            typer.echo(yaml.safe_dump(raw, sort_keys=False, width=100).rstrip())


def _raw_rule(rule) -> dict | None:
    """The rule as written in its pack (re-read, so `show` prints what the author wrote)."""
    from doctor import safeyaml

    for origin, raw in pack_loader.builtin_sources() + pack_loader.entry_point_sources()[0]:
        if origin == rule.origin:
            break
    else:
        try:
            with open(rule.origin, "rb") as handle:
                raw = handle.read()
        except OSError:
            return None
    data = safeyaml.load(raw).data
    for entry in data.get("rules") or []:
        if isinstance(entry, dict) and entry.get("id") == rule.id:
            return entry
    return None


@rules_app.command("schema")
def rules_schema():
    """Print the JSON Schema of a rule pack (for editors and CI linters)."""
    from doctor.engine import schema

    typer.echo(schema.render())


@rules_app.command("new")
def rules_new(
    rule_id: str = typer.Argument(..., help="The new rule's id, or <pack>/<id>."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE",
                                         help="Write the scaffold here instead of stdout (never overwrites)."),
):
    """Print a one-rule pack to start from, with examples that `rules test` runs."""
    from doctor.engine import scaffold

    pack, _, name = rule_id.rpartition("/")
    text = scaffold.new_pack(name, pack or "my-pack")
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        with open(output, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise DockdocError(f"{output} already exists", "choose another file name") from None
    except OSError as exc:
        raise DockdocError(f"cannot write {output}: {exc.strerror}") from None
    typer.echo(f"wrote {output}; edit it, then `dockdoc rules validate {output}` and `dockdoc rules test {output}`",
               err=True)


@rules_app.command("validate")
def rules_validate(paths: List[str] = typer.Argument(..., help="Pack files or directories.")):
    """Check packs and print every error with file, line and place; exit 0 when valid, 2 when not."""
    errors, count = [], 0
    for path in paths:
        found, problems = pack_loader.load_path(path)
        errors.extend(problems)
        count += sum(len(p.rules) for p in found)
    for line in errors:
        typer.echo(line, err=True)
    if errors:
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"ok: {count} rule{'s' if count != 1 else ''} valid")


@rules_app.command("test")
def rules_test(paths: List[str] = typer.Argument(..., help="Pack files or directories.")):
    """Run every rule's examples: each `match` must fire, each `no_match` must not. Exit 1 on failure."""
    from doctor.engine import examples

    packs, errors = [], []
    for path in paths:
        found, problems = pack_loader.load_path(path)
        packs.extend(found)
        errors.extend(problems)
    if errors:
        for line in errors:
            typer.echo(line, err=True)
        raise typer.Exit(EXIT_ERROR)
    failed = 0
    for outcome in examples.run(pack_loader.all_rules(packs)):
        status = "ok  " if outcome.ok else "FAIL"
        typer.echo(f"{status} {outcome.rule} ({outcome.checked} examples)")
        for problem in outcome.problems:
            typer.echo(f"     {problem}")
        failed += not outcome.ok
    total = sum(len(p.rules) for p in packs)
    typer.echo(f"{total - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(EXIT_FINDINGS)


register_watch(app)


def _color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def main() -> None:
    try:
        app()
    except DockdocError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"dockdoc: error: {exc}", err=True)
        if isinstance(exc, (RulePackError, ConfigError)) and len(exc.problems) > 1:
            for line in exc.problems[1:20]:
                typer.echo(f"  {line}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug or input we did not foresee: still one line
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"dockdoc: unexpected error: {type(exc).__name__}: {exc} "
                   "(run again with --debug for the traceback, and please report it)", err=True)
        sys.exit(EXIT_ERROR)
