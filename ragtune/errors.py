"""Errors whose message is meant for the user, not a stack trace."""


class RagtuneError(Exception):
    """Base class: str(error) is a complete, user-facing sentence saying what to do."""


class BadInputError(RagtuneError):
    """A file, row or argument the user gave cannot be used."""


class ModelNotFoundError(RagtuneError):
    """A model name or path does not resolve to weights on this machine."""


class ServerUnavailableError(RagtuneError):
    """An inference server is down, unreachable or not healthy."""


class JobError(RagtuneError):
    """A background job failed or was stopped."""


class WorkspaceError(RagtuneError):
    """A workspace is missing, duplicated or unreadable."""
