"""Exception families of mindram.

Each failure family has its own type so that callers can catch exactly what they expect; every
message names the offending file/key/value and what was expected.
"""


class MindramError(Exception):
    """Base class of every error raised by mindram on purpose."""


class ConfigError(MindramError, ValueError):
    """A configuration file, key or value is invalid (unknown key, wrong type, missing file)."""


class CheckpointError(MindramError, ValueError):
    """A checkpoint cannot be read, is unsafe, or does not match the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle inside a checkpoint references something other than tensor/storage rebuilds."""


class DataError(MindramError, ValueError):
    """A dataset, image or text input is malformed."""


class UnknownNameError(ConfigError, KeyError):
    """A model, architecture, task or registered ``type`` name that is unknown: a ConfigError (one-line CLI
    error) that is also a ``KeyError`` for code that looks names up."""

    __str__ = ConfigError.__str__  # the message itself, not KeyError's quoted repr


class TrainingStopped(MindramError, RuntimeError):
    """Training stopped on purpose (non-finite loss); checkpoints already written are intact."""


class OutputExistsError(MindramError, FileExistsError):
    """An output path already holds results of another run/file and would be overwritten."""


class DownloadError(CheckpointError):
    """Pretrained weights could not be downloaded or failed verification (size, sha256); nothing partial is kept
    in place of the checkpoint. A CheckpointError: the checkpoint a name stands for is not available."""
