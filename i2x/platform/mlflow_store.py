"""An MLflow tracking-store plugin for ``sqlite:`` URIs: MLflow's own store, created under
a file lock.

MLflow creates a new SQLite store's tables with alembic on first use. Two processes doing
that at once on a new file fail ("Online migration expected to match one row", "duplicate
column name") and can leave the store unusable. ``mlflow run`` touches the store in its
launcher before any i2x code runs, so :func:`i2x.platform.tracking.init_store` cannot serialise
that; this plugin, registered under MLflow's ``mlflow.tracking_store`` entry point for the
``sqlite`` scheme (``pyproject.toml``), runs in every MLflow process of this environment
and builds the store while holding an ``flock`` on ``.<db>.init.lock`` beside the file
(released by the kernel when the holder dies). The store itself is MLflow's, with one change:
a run ended KILLED is not turned FAILED afterwards. ``mlflow run``'s launcher does that after
every Ctrl-C: its check that the run already ended compares the status string with integer
codes, never matches, and overwrites the KILLED that the stopped run wrote (MLflow 3.17,
``mlflow/projects/__init__.py``, ``_maybe_set_run_terminated``). And ending or tagging a run
is retried while another writer holds the database, and a stop waits for the store's
transaction to end instead of cutting into it (issue 23).

Only the standard library is imported here: MLflow loads this module when it starts.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any


def db_path(store_uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI, or None (in-memory, ``file:`` URIs)."""
    rest = store_uri.partition("://")[2].split("?", 1)[0]
    if not rest.startswith("/") or rest in ("/", "/:memory:") or rest.startswith("/file:"):
        return None
    return Path(rest[1:])  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db


def sqlite_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    """MLflow's SQLAlchemy tracking store for ``store_uri``, built by one process at a time."""
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    path = db_path(store_uri)
    if path is None or not path.parent.is_dir():  # MLflow reports a missing folder itself
        return _keep_killed(_get_sqlalchemy_store(store_uri, artifact_uri))
    fd = os.open(path.parent / f".{path.name}.init.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _keep_killed(_get_sqlalchemy_store(store_uri, artifact_uri))
    finally:
        os.close(fd)


def _keep_killed(store: Any) -> Any:
    """``store`` whose ``update_run_info`` leaves a KILLED run KILLED when asked to mark it FAILED."""
    update = store.update_run_info

    def update_run_info(run_id: str, run_status: Any, end_time: Any, run_name: Any) -> Any:
        from mlflow.entities import RunStatus

        if run_status == RunStatus.FAILED and store.get_run(run_id).info.status == "KILLED":
            run_status, end_time = None, None
        return update(run_id, run_status, end_time, run_name)

    store.update_run_info = _retry_locked(update_run_info)
    store.set_tag = _retry_locked(store.set_tag)
    store.ManagedSessionMaker = _uninterrupted(store.ManagedSessionMaker)
    return store


def _uninterrupted(session_maker: Any) -> Any:
    """Every transaction of the store inside :func:`i2x.platform.process.uninterrupted`: a stop
    (SIGINT, SIGTERM) waits for the transaction to end instead of cutting into it."""
    import contextlib

    from i2x.platform.process import uninterrupted

    @contextlib.contextmanager
    def session(*args: Any, **kwargs: Any) -> Any:
        with uninterrupted(), session_maker(*args, **kwargs) as inner:
            yield inner

    return session


def _retry_locked(write: Any, seconds: float = 120.0) -> Any:
    """``write``, tried again while SQLite answers "database is locked": ending a run and
    tagging it are the writes a stop cannot do without. Another process writing the store
    without pause can hold its lock past the busy timeout MLflow sets (20 s), and a stopped run left
    RUNNING is the one outcome a stop must not have."""
    import time

    def retried(*args: Any, **kwargs: Any) -> Any:
        deadline, delay = time.monotonic() + seconds, 0.05
        while True:
            try:
                return write(*args, **kwargs)
            except Exception as exc:
                if "database is locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

    return retried
