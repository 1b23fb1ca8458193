"""The adapters' own error types: a caller's mistake (unknown model or hook, a value out of range).

`user_facing = True` marks an error whose message already names the problem and the fix: the
command line prints it as one line with exit status 2. Any other exception is a bug in diffdict
and keeps its traceback. They subclass the builtin types the code raised before, so callers that
catch ValueError / KeyError / FileNotFoundError still do.
"""

from __future__ import annotations


class AdapterInputError(ValueError):
    user_facing = True


class UnknownNameError(KeyError):
    user_facing = True

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class MissingFileError(FileNotFoundError):
    user_facing = True
