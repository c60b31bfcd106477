"""Progress for long loops: a tqdm bar on a terminal, plain dated lines in a log.

A tqdm bar written to a file is carriage-return debris. When stderr is not a TTY,
:class:`Progress` prints one line per ``I2X_PROGRESS_EVERY`` seconds (default 30) and
one when the loop ends, each with the count, the elapsed time and the ETA:

    i2x saliency: 3/7 ckpt, 41s elapsed, ETA 55s

Work that is not a counted loop (a solver, one long pass) is covered by :func:`heartbeat`,
which every stage runs under: when no progress line has been printed for that long, it
prints what the stage is doing (the last :func:`doing` or the last loop) and for how long,
so that no line of a log is more than ``I2X_PROGRESS_EVERY`` seconds from the one before.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def is_tty() -> bool:
    return sys.stderr.isatty()


_state = {"last": time.monotonic(), "doing": "", "since": None}  # the last line printed; what runs now, since when


def say(text: str) -> None:
    _state["last"] = time.monotonic()
    print(text, file=sys.stderr, flush=True)


def doing(what: str) -> None:
    """Say what the stage is doing now (the heartbeat names it, with how long it has been at
    it; nothing is printed)."""
    if what != _state["doing"]:
        _state["since"] = time.monotonic()
    _state["doing"] = what


class Beat:
    """The heartbeat's rule, clock-free: :meth:`due` returns the line to print at ``now``,
    if ``every_s`` have passed since the last line of any kind, else None."""

    def __init__(self, stage: str, every_s: float, start: float) -> None:
        self.stage, self.every_s, self.start = stage, every_s, start

    def due(self, now: float, last: float, what: str, since: float | None = None) -> str | None:
        """``since``: when ``what`` began (its own time is given beside the stage's: ``main``'s
        line counted from main's start while it named the explain stage, 5 minutes in)."""
        if now - last < self.every_s:
            return None
        doing = f"{what}, for {duration(now - since)}" if what and since is not None else what
        into = "since main started" if self.stage == "main" else "into the stage"
        return f"i2x {self.stage}: working{f' ({doing})' if doing else ''}, {duration(now - self.start)} {into}"


class heartbeat:  # noqa: N801 (used as a context manager, like contextlib's)
    """Run a stage with a daemon thread that applies :class:`Beat` once a second. Off on a
    terminal (the bars move) and when ``I2X_PROGRESS_EVERY`` is 0."""

    def __init__(self, stage: str) -> None:
        import threading

        every = float(os.environ.get("I2X_PROGRESS_EVERY", "30"))
        self.enabled = every > 0 and not is_tty()
        self.beat = Beat(stage, every, time.monotonic())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"i2x-heartbeat-{stage}", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(min(1.0, self.beat.every_s / 4)):
            line = self.beat.due(time.monotonic(), _state["last"], _state["doing"], _state["since"])
            if line:
                say(line)

    def __enter__(self) -> heartbeat:
        _state["last"], _state["doing"], _state["since"] = time.monotonic(), "", None
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()


class Progress:
    """``update()`` once per step; ``close()`` at the end (or use it as a context manager).

    Args:
        desc: what is counted, e.g. ``train``.
        total: the number of steps, if known (no ETA without it).
        initial: steps already done (a resumed run); the ETA uses only this run's rate.
        enabled: False prints nothing.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", initial: int = 0, enabled: bool = True,
                 every_s: float | None = None) -> None:
        self.desc, self.total, self.unit, self.n, self.start_n = desc, total, unit, initial, initial
        self.enabled = enabled
        self.every_s = float(os.environ.get("I2X_PROGRESS_EVERY", "30")) if every_s is None else every_s
        self.t0 = self.last = time.perf_counter()
        self.postfix = ""
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False) if enabled and is_tty() else None
        self.closed = False
        doing(desc)

    def eta_s(self) -> float | None:
        done = self.n - self.start_n
        if self.total is None or done <= 0:
            return None
        return (time.perf_counter() - self.t0) / done * (self.total - self.n)

    def line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        eta = self.eta_s()
        text = f"i2x {self.desc}: {count} {self.unit}, {duration(time.perf_counter() - self.t0)} elapsed"
        if eta is not None and self.n < (self.total or 0):
            text += f", ETA {duration(eta)}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def set_postfix(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last >= self.every_s and self.n != self.total:
            self.last = time.perf_counter()
            say(self.line())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        if self.enabled and self.n > self.start_n:
            say(self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def steps(items: Iterable[T], desc: str, unit: str = "it", enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress`; ``total`` defaults to ``len(items)``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()
