"""Which measure separates a planted mark from a digit's own part among shortcut-check candidates?

Reads the documents that ``bench/power.py`` saved (``--work``/docs) and its results file, and
lists every **candidate**: a class claim the causal check verified, the transplant test found
sufficient, and that sits in one region in at least ``explain.concentration_share`` of its
class's images (the shortcut check's rule before its off-object condition). A candidate is the
**mark** when it is the run's mark prototype (assigned to >= 80% of the mark's cells) for the
planted class; every other candidate is something the run could state falsely.

For each measure (``off_object``: the share of other classes' images blank where it sits;
``dominance``: the transplant's excess over its control, ``excess / (|control| + 1)``; ``flips``:
the share of recipients the paste turns to the class) and each threshold, it prints the share of
marks kept and the number of other candidates kept: a rule worth adding keeps the marks and drops
the rest. Reads files only; nothing is trained or explained.

    python bench/shortcut_rules.py --results bench/out/power-dom.jsonl --work bench/out/power-work
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.power import doc_path  # noqa: E402
from i2x.reporting.claims import dominance, shortcut_candidates  # noqa: E402

MEASURES = {"off_object": [0.3, 0.4, 0.45, 0.5, 0.55], "dominance": [0.25, 0.5, 1.0, 1.5], "flips": [0.1, 0.2, 0.3, 0.4],
            "rigid": [0.8, 0.9, 0.95, 1.0], "consistent": [0.6, 0.7, 0.8, 0.85, 0.9]}


def candidates(doc: dict, mark: int | None, target: str, shares: dict[str, float] | None = None) -> list[dict]:
    """Every shortcut-check candidate of one run, with its measures. A candidate is the mark
    when it is the run's mark prototype, or (``shares``: each prototype's share of the mark's
    cells, from runs that record it) holds at least 30% of the mark's cells, for the planted
    class."""
    def on_mark(k: int) -> bool:
        return (mark is not None and k == mark) or (shares or {}).get(str(k), 0.0) >= 0.3

    return [{"rigid": float(r["where"].get("rigid") or 0.0), "consistent": float(r["where"].get("consistent") or 0.0),
             "prototype": r["prototype"], "class": r["class"], "region": r["where"].get("region"),
             "mark": on_mark(r["prototype"]) and r["class"] == target,
             "off_object": float(r["where"].get("off_object") or 0.0), "dominance": dominance(r["transplant"]),
             "flips": float(r["transplant"]["flips"])} for r in shortcut_candidates(doc)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, help="bench/power.py's results file (JSON lines)")
    ap.add_argument("--work", default="bench/out/power-work", help="bench/power.py's --work (the documents are under docs/)")
    args = ap.parse_args()
    rows = [json.loads(x) for x in Path(args.results).read_text().splitlines() if x.strip()]
    found = []
    for r in rows:
        path = doc_path(Path(args.work), r["dataset"], r["rho"], r["seed"], r["n"], r["permuted"], r.get("explain", ""), r.get("plant", ""))
        doc = json.loads(path.read_text())
        target = doc["classes"][r["target"]]
        planted = r["rho"] is not None
        for c in candidates(doc, r["mark_prototype"] if planted else None, target, r.get("mark_shares") if planted else None):
            found.append({"rho": r["rho"], "seed": r["seed"], "permuted": r["permuted"], **c})
    print("| run | prototype -> class | region | mark? | off_object | dominance | flips | rigid | consistent |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in found:
        run = f"rho {c['rho']}" if c["rho"] is not None else ("permuted" if c["permuted"] else "clean")
        print(f"| {run} seed {c['seed']} | P{c['prototype']} -> {c['class']} | {c['region']} | {'**mark**' if c['mark'] else ''} | "
              f"{c['off_object']:.2f} | {c['dominance']:.2f} | {c['flips']:.2f} | {c['rigid']:.2f} | {c['consistent']:.2f} |")
    marks = [c for c in found if c["mark"]]
    rest = [c for c in found if not c["mark"]]
    runs_with_mark = sum(1 for r in rows if r["rho"] is not None)
    print(f"\n{len(rows)} runs ({runs_with_mark} planted): {len(marks)} mark candidates, {len(rest)} other candidates")
    for name, kind in (("mark", marks), ("other", rest)):
        for m in MEASURES:
            v = np.array([c[m] for c in kind])
            if len(v):
                print(f"  {name:5s} {m:10s}: min {v.min():.2f}, median {np.median(v):.2f}, max {v.max():.2f}")
    print("\n| rule | marks kept | other candidates kept |")
    print("|---|---|---|")
    for m, levels in MEASURES.items():
        for level in levels:
            keep_m = sum(c[m] >= level for c in marks)
            keep_o = sum(c[m] >= level for c in rest)
            print(f"| {m} >= {level} | {keep_m} of {len(marks)} | {keep_o} of {len(rest)} |")


if __name__ == "__main__":
    main()
