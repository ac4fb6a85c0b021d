"""Exceptions a user can cause. The CLI prints them as one line and exits non-zero."""


class AttnkitError(Exception):
    """Base class for errors that come from the user's input, not from a bug."""


class ConfigError(AttnkitError, ValueError):
    """An unknown config key or an invalid value; the message names the field."""


class CheckpointError(AttnkitError, ValueError):
    """A missing, truncated or mismatched checkpoint file or directory."""


class DataError(AttnkitError, ValueError):
    """Missing, empty or malformed data."""


class MissingDependencyError(AttnkitError, ImportError):
    """An optional package needed for this feature is not installed; the message says how to install it."""


class DivergedError(AttnkitError, FloatingPointError):
    """The training loss became nan or infinite; the message names the step and the setting to lower."""
