"""The dictionaries layer's own error types (see adapters/errors.py for what `user_facing` means)."""

from __future__ import annotations


class InputError(ValueError):
    """A value, file or store the caller supplied that cannot be used as it is; the message says why and the fix."""

    user_facing = True


class MissingFileError(FileNotFoundError):
    user_facing = True


class DamagedFileError(InputError):
    """A file the framework wrote and reads back (an index, a table, settings) that is truncated, damaged or
    foreign; the message names the file, what is wrong and a fix that never deletes good data."""

    user_facing = True


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file and how to resume."""

    user_facing = True

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class HubAccessError(ConnectionError):
    """The Hugging Face Hub cannot be written to from here (offline mode, no token, no network, token refused);
    the message says which and what to do. Raised before anything is staged or sent."""

    user_facing = True
