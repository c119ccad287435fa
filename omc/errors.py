"""The exceptions a user of omc can meet.

Everything a user can cause (a bad file, a bad size, a missing optional library, engines that do
not belong together) raises `OmcError` or a subclass, with a one-sentence message that says what
failed, on which file or value, and what to do. The CLI prints such errors as one line and exits
with status 2; any other exception is a bug in omc and keeps its traceback.
"""

from __future__ import annotations


class OmcError(Exception):
    """A problem the user can fix; the message is meant to be shown as it is."""


class BadInput(OmcError):
    """An input file, frame, size or option is unusable."""


class InvalidConfig(BadInput):
    """A config dataclass (omc.config) refused one field's value.

    The message reads '<Config>.<field> <problem>'; a front end that knows the field by another
    name (a command-line flag, a key of a streams file) says `renamed(its name)` instead.
    """

    def __init__(self, config: str, field: str, problem: str) -> None:
        super().__init__(f"{config}.{field} {problem}")
        self.config = config
        self.field = field
        self.problem = problem

    def renamed(self, name: str) -> BadInput:
        """The same refusal with the field called `name` (e.g. '--conf-thres')."""
        return BadInput(f"{name} {self.problem}")


class CheckpointError(OmcError):
    """A checkpoint cannot be read safely or does not fit the architecture it describes."""


class UnsafeCheckpoint(CheckpointError):
    """A pickle names a global outside the allow-list; nothing it names was run."""


class EngineMismatch(OmcError):
    """Engines or their metadata come from a different export, edition, version or GPU target."""


class EngineUnavailable(OmcError):
    """A remote engine server (Triton) is unreachable or not ready yet: retryable, like a live
    source that dropped out. A server that answers with the wrong model is an EngineMismatch."""


class MissingDependency(OmcError):
    """An optional library is not installed; the message names the pip extra that provides it."""

    def __init__(self, what: str, extra: str, detail: str = "") -> None:
        message = f"{what} is not installed; it comes with omc's '{extra}' extra: pip install '.[{extra}]'"
        if detail:
            message += f" ({detail})"
        super().__init__(message)
        self.what = what
        self.extra = extra


class CheckFailed(OmcError):
    """A verification ran and its result is outside tolerance (CLI exit status 1)."""


def raised_by_interrupt(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt is among the exceptions that led to `exc` (its causes and
    contexts): an extension module may turn a Ctrl-C during its import into an ImportError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
