"""The one exception type a user can cause and fix.

The command line prints these as a single line (no traceback) and exits with status 2;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (data, flags, files) whose message names the thing and the fix."""


class DataError(UserError):
    """CIFAR-10 could not be found, read or decoded from ``data_dir``."""


class ConfigError(UserError, ValueError):
    """A hyperparameter out of its valid range."""
