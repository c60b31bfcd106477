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
    if scheme in ("http", "https"):
        check_server(uri)
        return
    if scheme in ("postgresql", "mysql", "mssql"):
        check_database(uri)
        return
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


SERVER_WAIT_S = 10.0


def check_server(uri: str, wait_s: float = SERVER_WAIT_S) -> None:
    """A tracking server answers within ``wait_s`` (any HTTP status below 500: one behind a
    password answers 401), or one line. Without this, MLflow's client retried for 150 s, the
    stage printing "working" lines that never said why."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=wait_s).close()  # noqa: S310 (the user's own tracking URI)
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
    else:
        return
    raise I2XError(f"the tracking server {redact(uri)} does not answer ({reason[:120]}); start it (i2x services up, or mlflow "
                   f"server) or point MLFLOW_TRACKING_URI at one that runs; no run was opened")


def check_database(uri: str, wait_s: int = 10) -> None:
    """A database tracking store accepts a connection within ``wait_s``, or one line (a
    PostgreSQL server that refused gave MLflow's 137-line traceback and 45 warning lines)."""
    from sqlalchemy import create_engine

    args = {"connect_timeout": wait_s} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = create_engine(uri, connect_args=args)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 (refused, unknown host, bad credentials, no driver: the operator's to fix)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise I2XError(f"cannot read the tracking store {redact(uri)}: {reason[:160]}; check that the database is up and reachable") from None
