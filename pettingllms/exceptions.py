"""The errors pettingllms raises on purpose.

A `UserError` is a mistake in what the user asked for (a config key, a path, a data file).
The command line prints its message on one line and exits with status 2, without a
traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input; the message says what was wrong and what is accepted."""


class ConfigError(UserError):
    """An unknown or invalid config key or value."""


class UnknownEnvError(UserError):
    """A name that is not in the environment registry."""


class DataError(UserError):
    """A data file that is missing, empty, or broken."""


class ModelNotFoundError(UserError):
    """A model path or name that cannot be loaded."""


class ResumeMismatchError(UserError):
    """Resuming a run with settings that differ from the ones its files were made with."""


class InfrastructureError(Exception):
    """Something around the model failed (a server, a timeout, the sandbox), not the model itself.

    The runner records the episode as an error of `kind` and goes on; a resumed run plays
    such episodes again when the kind is transient (`collect.TRANSIENT_ERROR_KINDS`).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class PolicyError(InfrastructureError):
    """A backend could not produce a reply (server down, timeout after retries...)."""
