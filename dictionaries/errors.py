"""The dictionaries layer's own error types (see adapters/errors.py for what `user_facing` means)."""
from __future__ import annotations


class InputError(ValueError):
    """A value, file or store the caller supplied that cannot be used as it is; the message says why and the fix."""

    user_facing = True


class MissingFileError(FileNotFoundError):
    user_facing = True


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file and how to resume."""

    user_facing = True

    def __str__(self) -> str:
        return self.strerror or super().__str__()
