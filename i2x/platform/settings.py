"""How a config field declares what it accepts, once, next to the field: :func:`setting` puts
the field's bounds into its dataclass metadata, :data:`Check` states a rule between fields
beside the section that holds them, and :func:`field_problem` / :func:`rule_problems` are the
one place they are enforced (:mod:`i2x.platform.config_io`, before any run opens).

Every number is finite (YAML's ``.nan`` and ``.inf`` are refused), every list non-empty where
the field says so, and every item of a list inside the field's bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """What a numeric field (or every item of a list field) accepts.

    Attributes:
        lo / hi: the inclusive bounds (None: open); ``lo_open`` / ``hi_open`` exclude them.
        zero: 0 is accepted besides the range (a field where 0 means "all", "off" or "the
            default").
        nonempty: a list field needs at least one item.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    zero: bool = False
    nonempty: bool = False

    def words(self) -> str:
        """The accepted range in words (the error lines and the field table use it)."""
        lo, hi = (None if self.lo is None else _num(self.lo)), (None if self.hi is None else _num(self.hi))
        if lo is not None and hi is not None:
            text = {(False, False): f"from {lo} to {hi}", (True, True): f"between {lo} and {hi}, both excluded",
                    (True, False): f"above {lo} and at most {hi}", (False, True): f"at least {lo} and below {hi}"}[self.lo_open, self.hi_open]
        elif lo is not None:
            text = f"above {lo}" if self.lo_open else f"at least {lo}"
        elif hi is not None:
            text = f"below {hi}" if self.hi_open else f"at most {hi}"
        else:
            text = "any finite number"
        return f"0, or {text}" if self.zero else text

    def admits(self, value: float) -> bool:
        if self.zero and value == 0:
            return True
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def setting(default: Any, lo: float | None = None, hi: float | None = None, *, above: float | None = None,
            below: float | None = None, zero: bool = False, nonempty: bool = False) -> Any:
    """A dataclass field with its bounds: ``lo`` / ``hi`` inclusive, ``above`` / ``below``
    exclusive, ``zero`` also accepts 0, ``nonempty`` refuses an empty list. For a list field
    the bounds hold for every item."""
    bounds = Bounds(lo=above if above is not None else lo, hi=below if below is not None else hi, lo_open=above is not None,
                    hi_open=below is not None, zero=zero, nonempty=nonempty)
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def bounds_of(section: type, name: str) -> Bounds | None:
    for f in dataclasses.fields(section):
        if f.name == name:
            return f.metadata.get("bounds")
    return None


def field_problem(key: str, value: Any, bounds: Bounds | None, source: str) -> str | None:
    """Why ``value`` (from ``source``) is not accepted by a field, in one line, or None."""
    items = list(value) if isinstance(value, (tuple, list)) else None
    if items is not None:
        if bounds is not None and bounds.nonempty and not items:
            return f"config key '{key}' in {source} needs at least one value, got []"
        for item in items:
            problem = _number_problem(key, item, bounds, source, "every value of ")
            if problem:
                return problem
        return None
    return _number_problem(key, value, bounds, source, "")


def _number_problem(key: str, value: Any, bounds: Bounds | None, source: str, prefix: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{prefix}config key '{key}' in {source} must be a finite number, got {value}"
    if bounds is not None and not bounds.admits(value):
        return f"{prefix}config key '{key}' in {source} must be {bounds.words()}, got {value}"
    return None


@dataclass(frozen=True)
class Check:
    """A rule between fields of one section: ``holds(section)`` must be true, else ``say``
    (formatted with the section's fields) is the error."""

    keys: tuple[str, ...]
    holds: Callable[[Any], bool]
    say: str


def rule_problems(section_name: str, section: Any) -> list[str]:
    """The section's :class:`Check` rules (its class's ``CHECKS``) that do not hold, in words."""
    out = []
    for check in getattr(type(section), "CHECKS", ()):
        if not check.holds(section):
            values = ", ".join(f"{section_name}.{k}={getattr(section, k)!r}" for k in check.keys)
            out.append(f"{check.say} (got {values})")
    return out
