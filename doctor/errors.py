"""The exceptions users see: each becomes one line and exit code 2 at the top of the CLI."""


class DockdocError(Exception):
    """A problem the user can act on. `hint` says what to try."""

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class DockerUnavailable(DockdocError):
    """The daemon cannot be reached or refused us."""


class ContainerNotFound(DockdocError):
    """A name, id or glob on the command line matched no container."""


class RulePackError(DockdocError):
    """A rule pack cannot be loaded. `problems` holds every error, each with file:line: breadcrumb."""

    def __init__(self, problems: list, hint: str = ""):
        self.problems = list(problems)
        first = self.problems[0] if self.problems else "invalid rule pack"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}", hint)


class SnapshotError(DockdocError):
    """A snapshot file is unreadable, malformed or from a newer schema."""
