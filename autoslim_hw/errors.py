"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: the message names what is wrong and how to fix it."""


class ConfigError(UserError):
    """A channel config that does not fit the supernet's search space."""


class UnsupportedOperationError(UserError):
    """A graph node whose effect on channels autoslim-hw cannot track."""


class DataError(UserError):
    """A dataset that is missing or unreadable."""


class CheckpointError(UserError):
    """A checkpoint or artifact that is missing, corrupt or of the wrong kind."""


class interrupted_hint:  # noqa: N801  (a context manager used like a statement)
    """Ctrl-C inside: print how to go on (one line on stderr) and exit with code 130."""

    def __init__(self, hint: str):
        self.hint = hint

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is KeyboardInterrupt:
            import sys

            print(f"interrupted; {self.hint}", file=sys.stderr)
            raise SystemExit(130) from None
        return False
