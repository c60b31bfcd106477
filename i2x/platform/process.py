"""Process plumbing of a stage run, without MLflow: SIGTERM/SIGINT as an exception, one
process per work folder (an flock the kernel releases when its holder dies), a write probe
for a SQLite file, scratch folders and the git commit. :mod:`i2x.platform.tracking` builds the run
lifecycle on these.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

UNDER_MAIN = "I2X_UNDER_MAIN"  # set by `i2x main` for its stage processes: main prints the stop line, once


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT during a stage. A KeyboardInterrupt, so that ``mlflow.projects.run``
    cancels the child stage it is waiting for, and the run ends KILLED, not RUNNING."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def quiet_timer() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


_CRITICAL = threading.local()  # the main thread's depth of store transactions (uninterrupted)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A block a stop must not cut in two: a tracking-store transaction. A stop cut into one
    leaves its connection holding the SQLite lock while the exception is handled, and the
    run's own end (KILLED) then waited on that lock. A stop that arrives inside is raised by
    the stop's timer once the block is over (within 0.1 s)."""
    _CRITICAL.depth = getattr(_CRITICAL, "depth", 0) + 1
    try:
        yield
    finally:
        _CRITICAL.depth -= 1


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside :func:`uninterrupted`, a part that takes stops again (a deferred one lands here,
    within 0.1 s): an Optuna trial's objective, whose study holds the stops back while it
    creates and ends trials."""
    depth = getattr(_CRITICAL, "depth", 0)
    _CRITICAL.depth = 0
    try:
        yield
    finally:
        _CRITICAL.depth = depth


def _in_critical() -> bool:
    return getattr(_CRITICAL, "depth", 0) > 0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Turn SIGTERM and SIGINT into :class:`Stopped` (main thread only); handlers restored on exit.

    Python may run a handler inside a finalizer or weakref callback, where the exception is
    printed and dropped. So the handler also arms a 0.1 s repeating SIGALRM that raises
    :class:`Stopped` again until one lands; the caller stops the timer when it catches it.
    Yields the list of signals received.
    """
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def handler(signum: int, _frame: Any) -> None:
        pending.append(signum)
        if len(pending) > 1:  # a second signal (mlflow's launcher sends SIGTERM after Ctrl-C's SIGINT) must not
            return            # interrupt the cleanup of the first, nor rename it; the timer delivers the first
        signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
        if not _in_critical():  # else the timer raises it once the store's transaction is over
            raise Stopped(signum)

    def again(_signum: int, _frame: Any) -> None:
        if not _in_critical():
            raise Stopped(pending[0])

    def unraisable(info: Any) -> None:  # a stop swallowed in a finalizer: the timer raises it again, silently
        if not isinstance(info.exc_value, Stopped):
            hook(info)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, again)
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield pending
    finally:
        quiet_timer()
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.unraisablehook = hook


def exit_when_done() -> Callable[[int], None]:
    """For a process entry point, around ``main``: SIGTERM/SIGINT before ``main`` holds its own
    handlers (and in the instant after it lets them go) is :class:`Stopped`, which ``main``
    turns into its one stop line; once the command is done, a stop exits at once with the
    command's own exit code. Without this, a stop during the interpreter's teardown (atexit
    callbacks, thread joins: seconds after an MLflow run) printed Python's KeyboardInterrupt
    traceback and exited -2, or died silently by SIGTERM, after the work had finished.
    Returns the function to call with the exit code."""
    code: list[int] = []

    def late(signum: int, _frame: Any) -> None:
        if not code:
            raise Stopped(signum)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code[0])

    def ignore() -> None:  # the last atexit callback: Python then resets its handlers to the default (death)
        for sig in (signal.SIGTERM, signal.SIGINT):  # for the rest of the teardown (modules, torch's C++
            signal.signal(sig, signal.SIG_IGN)       # destructors), which the sweep once hit; SIG_IGN is kept

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, late)
        atexit.register(ignore)  # registered first, so it runs after every other atexit callback
    return code.append


@contextlib.contextmanager
def folder_lock(folder: Path, who: str = "another run") -> Iterator[None]:
    """One process at a time per work folder (``.<name>.lock`` beside it, an flock: released
    by the kernel when the holder dies, even by SIGKILL). A second run of the same work waits,
    then finds the first one's outputs and reuses them."""
    lock = folder.parent / f".{folder.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"i2x: {who} is using {folder}; waiting for it to finish", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22): a
    pid reused by another process has another one. Empty where /proc has no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def holder() -> str:
    """Who holds a run or a trial while it is RUNNING: ``<host> <pid> <start ticks>``."""
    return f"{socket.gethostname()} {os.getpid()} {start_ticks(os.getpid())}"


def holder_alive(value: str) -> bool | None:
    """Whether the process ``value`` (from :func:`holder`) still lives: None when it ran on
    another host, which this one cannot see."""
    parts = value.split()
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, ticks = parts
    if host != socket.gethostname():
        return None
    return bool(ticks) and start_ticks(int(pid)) == ticks


def probe_write(db: Path) -> None:
    """Take and drop SQLite's write lock on ``db``: a store that reads but cannot be written
    (file mode, immutable flag, read-only mount) fails here, not at the run's first write
    after the run was opened."""
    import sqlite3

    con = sqlite3.connect(db, timeout=10)
    try:
        con.execute("BEGIN IMMEDIATE")  # a read-only connection still takes this lock; the write below fails
        version = con.execute("PRAGMA user_version").fetchone()[0]
        con.execute(f"PRAGMA user_version = {int(version)}")
        con.rollback()
    finally:
        con.close()


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"i2x-{prefix}-"))
