"""The one exception tree of snapflow_ros: catch SnapflowError to catch them all."""


class SnapflowError(Exception):
    """Base class of every error raised on purpose by snapflow_ros."""


class ConfigError(SnapflowError, ValueError):
    """A configuration value is invalid; the message names the field, the value and the fix."""


class InputError(SnapflowError, ValueError):
    """An observation (topic, field, shape or value) cannot be used for inference."""


class CheckpointError(SnapflowError):
    """A checkpoint is missing, unreadable or does not match what loads it."""


class BagError(InputError):
    """A bag cannot be read or lacks what the dataset configuration asks for; names bag, topic, field."""
