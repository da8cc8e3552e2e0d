"""Errors that the CLI turns into one line on stderr and an exit code, never a traceback."""


class ZooError(Exception):
    """A failure the user can act on. `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(ZooError):
    """Bad arguments: unknown plugin, target, option, value or device."""

    exit_code = 2


class DataError(ZooError):
    """A dataset that is missing, empty or malformed."""


class CheckpointError(ZooError):
    """A checkpoint that is missing, truncated, corrupt, unsafe or for another plugin."""


class TrainingDiverged(ZooError):
    """A loss became NaN or infinite."""


class DiskFull(ZooError):
    """A write ran out of space; nothing that existed before was changed."""
