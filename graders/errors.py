"""Errors a user can cause. Each message says what is wrong, where (file, row, field) and what to do.

The UI and the CLI show `str(err)` to the person; tracebacks go only to the log.
"""


class FinetunerError(Exception):
    """Base class for every problem the user can fix."""


class ConfigError(FinetunerError):
    """A RunConfig field is missing, mistyped or inconsistent."""


class DataError(FinetunerError):
    """A data file or dataset cannot be used as given."""


class ModelError(FinetunerError):
    """A model cannot be loaded, or not in the requested way."""


class RunError(FinetunerError):
    """A run folder is missing, busy or in a state that forbids the request."""
