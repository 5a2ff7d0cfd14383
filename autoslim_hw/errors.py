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
