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


class ExportError(SnapflowError):
    """A graph could not be exported or failed onnx.checker."""


class HoldError(SnapflowError):
    """No observation can be assembled now; the message says why (for diagnostics)."""


class NodeError(SnapflowError):
    """A ROS node that a command started did not come up or did not answer."""


class TrainingDivergedError(SnapflowError, FloatingPointError):
    """The training loss became NaN or infinite; nothing from that step on is saved."""
