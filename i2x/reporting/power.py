"""What a run could have found: the report's one line on detection power, read off the curve
that ``bench/power.py`` measured with planted marks (``power_curves.json`` beside this module).

"Nothing found" is a claim too. The line gives the model's reliance on a planted corner mark
above which the report stated the mark in at least :data:`POWER` of the runs, how often it was
stated below that, and how often a clean run stated a false one; for a data set without a
measured curve it says that a missing finding shows nothing.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

POWER = 0.8
MIN_RUNS = 3  # a threshold needs at least this many runs at or above it


@cache
def curves() -> dict[str, Any]:
    path = Path(__file__).with_name("power_curves.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def threshold(runs: list[dict[str, Any]], power: float = POWER, min_runs: int = MIN_RUNS) -> float | None:
    """The smallest flip rate ``f`` such that the runs whose model flips at least ``f`` had the
    mark stated in at least ``power`` of them (and there are at least ``min_runs``); None when
    no such ``f`` exists."""
    flips = sorted({r["flip"] for r in runs})
    for f in flips:
        above = [r for r in runs if r["flip"] >= f]
        if len(above) >= min_runs and sum(r["stated"] for r in above) >= power * len(above):
            return f
    return None


def share_interval(k: int, n: int) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided 95% interval of a rate seen ``k`` times in ``n``
    runs: what a handful of seeds can claim ("0 of 3" is consistent with up to 71%)."""
    from scipy.stats import beta

    lo = float(beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return lo, hi


MATCH_KEYS = ("data.train_limit", "train.epochs", "model.name", "model.width", "data.analysis_size")  # what a curve was measured on


def _differs(doc: dict[str, Any], curve: dict[str, Any]) -> list[str]:
    """The keys of :data:`MATCH_KEYS` where this run's config is not the curve's."""
    config = doc.get("config") or {}
    return [key for key, value in (curve.get("match") or {}).items()
            if (config.get(key.split(".")[0]) or {}).get(key.split(".")[1]) != value]


def power_line(doc: dict[str, Any], measured: dict[str, Any] | None = None) -> str:
    """One sentence: the power of this kind of run on its data set (``measured``: the curves,
    default :func:`curves`), only from a curve measured on this run's setting (its cut, epochs,
    model and analysed images); otherwise that power is not measured for the setting."""
    dataset = doc["run"]["dataset"]
    curve = (curves() if measured is None else measured).get(dataset)
    if not curve:
        return (f"detection power is not measured for {dataset}: a shortcut the report does not state may still be there "
                f"(bench/power.py measures it with planted marks)")
    differs = _differs(doc, curve)
    if differs or not curve.get("match"):
        config = doc.get("config") or {}
        these = ", ".join(f"{k}={(config.get(k.split('.')[0]) or {}).get(k.split('.')[1])}" for k in differs)
        return (f"detection power is not measured for this setting: the measured curve on {dataset} is for {curve['setting']}, "
                f"N = {curve['n']:,}" + (f", and this run has {these}" if these else "") + "; a shortcut the report does not state may "
                "still be there (bench/power.py measures it with planted marks)")
    runs, n = curve["runs"], curve["n"]
    where = f"on {dataset} (bench/power.py, {curve['setting']}, N = {n:,}, {len(runs)} runs with a planted corner mark)"
    f = threshold(runs)
    clean = curve.get("clean") or {}
    false = ""
    if clean.get("runs"):
        lo, hi = share_interval(clean["false"], clean["runs"])
        bound = f"up to {100 * hi:.0f}%" if not clean["false"] else f"{100 * lo:.0f}-{100 * hi:.0f}%"
        false = f"; a clean run stated a false one in {clean['false']} of {clean['runs']} (a false rate of {bound} fits that, 95%)"
    ran = doc.get("metrics", {}).get("n_samples")
    other_n = f" (this run analysed {ran:,} images)" if ran and ran != n else ""
    if f is None:
        stated = sum(r["stated"] for r in runs)
        return (f"power {where}: the mark was {curve['stated_as']} in {stated} of {len(runs)} runs, and in fewer than "
                f"{100 * POWER:.0f}% of them at any level of the model's reliance on it, so a shortcut can go unseen{false}{other_n}")
    below = [r for r in runs if r["flip"] < f]
    above = [r for r in runs if r["flip"] >= f]
    less = (f"; when it follows the mark less, in {sum(r['stated'] for r in below)} of {len(below)}, so a shortcut this model "
            f"uses less can go unseen") if below else ""
    return (f"power {where}: when the model follows the mark (it turns at least {100 * f:.0f}% of the other classes' marked "
            f"images into the mark's class), the mark was {curve['stated_as']} in {sum(r['stated'] for r in above)} of "
            f"{len(above)} runs{less}{false}{other_n}")
