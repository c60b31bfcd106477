"""The tracking store's URI, checked before any run opens (issue 23): an unknown scheme, a
SQLite path that is a directory, a file that is not a database, or a path component the
file system cannot hold is one line that says what to do, not a traceback or a two-minute
wait that blames another process."""

from __future__ import annotations

from pathlib import Path

from i2x.platform.errors import I2XError
from i2x.platform.secrets import redact

SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks")
NAME_MAX = 255  # bytes per path component on Linux file systems
SQLITE_MAGIC = b"SQLite format 3\x00"
FIX = "set MLFLOW_TRACKING_URI to sqlite:///<folder>/mlflow.db, a postgresql:// URL, an http(s):// server or a folder"


def check_tracking_uri(uri: str) -> None:
    """Raise :class:`I2XError` for a tracking URI that cannot work; say nothing otherwise."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme and scheme not in SCHEMES:
        raise I2XError(f"the tracking URI {redact(uri)} has an unknown scheme '{scheme}'; {FIX}")
    if scheme not in ("", "sqlite", "file"):
        return
    path = Path(uri.split("://", 1)[1].removeprefix("/") if scheme == "sqlite" else uri.split("://", 1)[-1])
    long = [part for part in path.parts if len(part.encode()) > NAME_MAX]
    if long:
        raise I2XError(f"the tracking store path has a component of {len(long[0].encode())} bytes ('{long[0][:24]}...'), more than "
                       f"the file system allows ({NAME_MAX}); {FIX} with a shorter path")
    if scheme != "sqlite":
        return
    if path.is_dir():
        raise I2XError(f"the tracking store {path} is a directory, not an SQLite file; {FIX} (e.g. sqlite:///{path}/mlflow.db)")
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
        if head != SQLITE_MAGIC:
            raise I2XError(f"the tracking store {path} is not an SQLite database (it starts with {head[:8]!r}); move it away, or {FIX}")
