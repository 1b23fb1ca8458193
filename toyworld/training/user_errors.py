"""The toy world's error types for a caller's mistake (see adapters/errors.py for `user_facing`)."""

from __future__ import annotations


class ToyInputError(ValueError):
    user_facing = True


class ToyMissingFileError(FileNotFoundError):
    user_facing = True
