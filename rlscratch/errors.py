"""Errors caused by what the user gave us (a config, a data file, a checkpoint). The command-line
tools print them as one line and exit with status 2; anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """Base class: the message names the problem and the fix, on one line."""


class ConfigError(UserError):
    """A config file or a --set override is malformed, unknown or out of range."""


class CheckpointError(UserError):
    """A run directory or checkpoint is missing, corrupt, or belongs to a different experiment."""
