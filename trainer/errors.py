"""Errors a user can act on. The CLI prints their message alone, without a traceback."""


class UserError(Exception):
    """A problem in the user's input (config, data, checkpoint, sweep): the message says which and what to do."""


class ConfigError(UserError, ValueError):
    """A config key, value or file is wrong."""


class DataError(UserError):
    """A clip, label or dataset folder is wrong."""


class CheckpointError(UserError):
    """A checkpoint cannot be read or does not fit the model."""


class TrainingFailed(UserError):
    """The run stopped as failed (NaN losses, out of memory, a full disk); the reason is in summary.json."""
