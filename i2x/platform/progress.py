"""Progress for long loops: a tqdm bar on a terminal, plain dated lines in a log.

A tqdm bar written to a file is carriage-return debris. When stderr is not a TTY,
:class:`Progress` prints one line per ``I2X_PROGRESS_EVERY`` seconds (default 30) and
one when the loop ends, each with the count, the elapsed time and the ETA:

    i2x saliency: 3/7 ckpt, 41s elapsed, ETA 55s
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
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        if self.enabled and self.n > self.start_n:
            print(self.line(), file=sys.stderr, flush=True)

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
