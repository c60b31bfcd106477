"""The one exception type users see.

Every user mistake (bad config key, missing data, wrong checkpoint) raises
:class:`I2XError` with a single-line message that says what was wrong and how to
fix it. The CLI prints it as ``i2x: error: <message>`` and exits with status 2.
"""

from __future__ import annotations

import errno
import os


class I2XError(Exception):
    """A user-facing error with a one-line, actionable message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# OS errors an operator fixes (a full disk, a folder they may not write): one line each, not a
# traceback. ``{path}`` is the file the system call named.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device of {path}; free space there (or point work_dir or the artifact store "
                  "elsewhere), then run the same command again (training resumes from its last whole checkpoint)",
    errno.EDQUOT: "the disk quota is used up on the device of {path}; free space there (or point work_dir or the "
                  "artifact store elsewhere), then run the same command again (training resumes from its last whole checkpoint)",
    errno.EROFS: "{path} is on a read-only file system; point work_dir, the report folder or the artifact store at a "
                 "writable place, then run the same command again",
    errno.EACCES: "permission denied on {path}; make it writable by this user (or point work_dir, the report folder or the "
                  "artifact store elsewhere), then run the same command again",
    errno.EPERM: "operation not permitted on {path}; make it writable by this user (or point work_dir, the report folder or "
                 "the artifact store elsewhere), then run the same command again",
    errno.ENAMETOOLONG: "{path} is longer than the file system allows; use a shorter work_dir, data_dir or report folder",
}


def os_error_message(exc: BaseException, where: str = "a file it writes") -> str | None:
    """The one line for an operator's OS error anywhere in ``exc``'s chain (``raise ... from``
    or an exception raised while handling it); ``None`` for anything else. ``where`` names the
    place when the failed call named no file (a write). SQLite reports a full disk in words."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
            path = exc.filename if exc.filename is not None else where
            return _OS_ERRORS[exc.errno].format(path=os.fsdecode(path) if isinstance(path, bytes) else path)
        if "database or disk is full" in str(exc):
            return _OS_ERRORS[errno.ENOSPC].format(path="the tracking store (SQLite)")
        exc = exc.__cause__ or exc.__context__
    return None


def read_user_text(path: os.PathLike[str] | str, what: str, max_bytes: int, fix: str) -> str:
    """A text file as users save it: UTF-8 with or without a byte-order mark, at most
    ``max_bytes``; one line naming ``what`` it is otherwise (too large, not UTF-8, unreadable)."""
    from pathlib import Path

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise I2XError(f"{what} {path} is {size:,} bytes, more than {max_bytes:,}; {fix}")
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise I2XError(f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                       "save it as UTF-8") from None
    except OSError as exc:
        raise I2XError(f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__}); {fix}") from None
