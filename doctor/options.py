"""Command-line choices and options that more than one command takes (scan, explain, probe,
watch, rules): defined once so that they read and behave the same everywhere."""

from __future__ import annotations

import enum

import typer


class Severity(str, enum.Enum):
    """A severity on the command line (--min-severity)."""

    info = "info"
    warning = "warning"
    error = "error"


class FailOn(str, enum.Enum):
    info = "info"
    warning = "warning"
    error = "error"
    never = "never"


Rules = typer.Option(
    None, "--rules", metavar="PATH",
    help="Extra rule pack file or directory (repeatable; also DOCKDOC_RULES, ':'-separated).")
Config = typer.Option(None, "--config", metavar="FILE",
                      help="Config file (default: ./dockdoc.yaml, then the user config directory).")
LabelIgnores = typer.Option(True, "--label-ignores/--no-label-ignores",
                            help="Honour the container label dockdoc.ignore=<rule>,<rule>.")
Post = typer.Option(
    None, "--post", metavar="[KIND=]URL", envvar="DOCKDOC_POST",  # env: keeps URLs out of `ps` and inspect
    help="Send new and resolved findings here (repeatable). KIND: webhook (default; JSON, signed with "
         "$DOCKDOC_WEBHOOK_SECRET when set) or slack (incoming webhook). Also DOCKDOC_POST (space-separated), "
         "which keeps the URLs, often secrets themselves, out of `ps` and `docker inspect`.")
State = typer.Option(
    None, "--state", metavar="PATH",
    help="The SQLite state store (default: $DOCKDOC_STATE, else $XDG_STATE_HOME/dockdoc/state.db).")
LogLines = typer.Option(200, "--log-lines", min=0, max=100000, help="Log lines to read per container.")
Exec = typer.Option(False, "--exec",
                    help="Opt in to `docker exec cat /proc/net/tcp` inside containers whose sockets this "
                         "host cannot see (runs a process in them).")
