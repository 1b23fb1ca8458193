"""The studies layer's own error types. `user_facing = True`: the command line prints the message
(which names the file or key, what is wrong and the fix) with exit status 2; any other exception
is a bug and keeps its traceback (exit status 1). See docs/errors.md."""

from __future__ import annotations

import errno


class UserError(ValueError):
    """A mistake in the user's input or in the state of a run folder."""

    user_facing = True


class MissingFileError(FileNotFoundError):
    user_facing = True


class ConfigError(ValueError):
    """A config file that cannot be run as written. The message names file, key and fix."""

    user_facing = True


# errno -> the fix printed after a file-system error
_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free space there (or choose another `out`) and run the same "
    "command again; finished work is kept",
    errno.EDQUOT: "disk quota exceeded: free space there (or choose another `out`) and run the same command again",
    errno.EROFS: "the file system is read-only: choose an `out` on a writable disk",
    errno.EACCES: "permission denied: choose a folder you can write (e.g. `out` under your home) or fix its "
    "permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write or fix its permissions",
    errno.ENOTDIR: "a part of this path is a file, not a folder: remove or rename that file, or choose another path",
    errno.EISDIR: "this is a folder, a file is expected here: give the path of a file",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EEXIST: "it already exists and is in the way: remove or rename it",
    errno.ENAMETOOLONG: "the path is too long: choose shorter names",
}


def user_message(error: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug (keep the traceback)."""
    if getattr(type(error), "user_facing", False):
        if isinstance(error, KeyError) and error.args:
            return str(error.args[0])
        return str(error)
    if isinstance(error, UnicodeDecodeError):
        return f"cannot read a text file as UTF-8 ({error.reason} at byte {error.start}); save it as UTF-8 text"
    if isinstance(error, OSError) and error.errno in _OS_FIXES:
        where = error.filename if error.filename is not None else "a file"
        also = f" -> {error.filename2}" if getattr(error, "filename2", None) else ""
        return f"{where}{also}: {error.strerror or error}; {_OS_FIXES[error.errno]}"
    return None
