"""Does tune's choice of a repair agree with the test split's ranking? (issue 42)

Tune picks an i2x strategy by the worst i2x group on a set it builds from the validation split
with the finding's cells (no group label): today the judging set of :mod:`i2x.repair.heldout`
(every validation image as it is and edited: every (class, finding) group holds all the class's
images), the finding's cells and one cell around them pasted. Until this release it was half of
the validation split, each image edited or not by a coin (the other half went to i2x-dfr's
refit), the finding's cells alone: groups of about 30 images.

Per training seed (the planted cut of ``bench/repair.py``), this bench fine-tunes the final model
once by each of a fixed set of i2x variants, scores every model on both judging sets and on the
test split by the true groups, and asks per rule what it picks (with tune's do-no-harm rule) and
how far that pick's test worst group is below the test's own best (its regret); beside it, the
rank correlation between the judging worst group and the test's over the variants.

    python bench/selection.py --seeds 5
    python bench/selection.py --table bench/out/selection.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.repair import add_planted_args, prepare  # noqa: E402
from i2x.repair.choice import does_no_harm, validation_scores  # noqa: E402
from i2x.repair.evaluation import score  # noqa: E402
from i2x.repair.heldout import HeldOut, _edit, donor_positions, judging_set  # noqa: E402
from i2x.repair.strategies import run_strategy  # noqa: E402

VARIANTS = [("i2x-augment", {"how": "swap", "share": 0.5}), ("i2x-augment", {"how": "swap", "share": 0.9}),
            ("i2x-augment", {"how": "mask", "share": 0.5}), ("i2x-augment", {"how": "blur", "share": 0.5}),
            ("i2x-groups", {"power": 1.0}), ("i2x-groups", {"power": 0.5}), ("i2x-dfr", {})]
MAX_LOSS = 0.01
CLOSE = 0.02  # a pick within 2 points of the test's best counts as agreeing


def coin_half(data, cells, cls: int, seed: int, donors) -> HeldOut:
    """The judging set before this release: the scoring half of the validation split, each image
    of another class pasted by a coin (``tune.heldout_take_out=none``), once each."""
    gen = torch.Generator().manual_seed(seed * 104_729 + 17)
    val = data.val_idx
    y = data.train_y[val]
    paste = (y != cls) & (torch.rand(len(y), generator=gen) < 0.5)
    x, now = _edit(data, cells, cls, val, paste, torch.zeros_like(paste), "none", gen, donors)
    part = (torch.rand(len(y), generator=gen) >= 0.5).numpy()  # the other half was i2x-dfr's
    present = cells[val].flatten(1).any(1).numpy()
    return HeldOut(x=x[part], original=data.train_x[val][part], y=y[part], groups=(2 * y + now.long()).numpy()[part],
                   carried=present[part], edited=paste.numpy()[part], source=val.numpy()[part])


def one(dataset: str, seed: int, rho: float, target: int, lr: float, work: Path, extra: str = "") -> list[dict]:
    ctx, finding, _, _ = prepare(dataset, seed, rho, target, lr, work, extra)
    if finding is None:
        print(f"seed {seed}: no shortcut check; nothing to choose", flush=True)
        return []
    donors, seed_ = ctx.donor_positions(), ctx.config.seed
    rules = {"coin half, the finding's cells (before)": coin_half(ctx.data, ctx.core, finding.cls, seed_, donors),
             "every image twice, the finding's cells": judging_set(ctx.data, ctx.core, finding.cls, seed_, donors=donors),
             "every image twice, one cell of margin (now)": judging_set(ctx.data, ctx.cells, finding.cls, seed_, donors=donors),
             "every image twice, margin, validation donors": judging_set(
                 ctx.data, ctx.cells, finding.cls, seed_, donors=donor_positions(ctx.data, ctx.core, finding.cls, ctx.data.val_idx)),
             "every image twice, margin, the cue also taken out (swap-out)": judging_set(ctx.data, ctx.cells, finding.cls, seed_,
                                                                                         "swap-out", donors=donors)}
    sizes = {r: int(np.median([n for n in np.bincount(h.groups) if n >= 5])) for r, h in rules.items()}
    rows = []

    def add(variant: str, model) -> None:
        test = score(model, ctx, ctx.test_groups)
        rows.append({"seed": seed, "variant": variant, "judged": {r: list(validation_scores(ctx, model, h)) for r, h in rules.items()},
                     "test_worst": test["worst_group"], "test_accuracy": test["accuracy"], "sizes": sizes})
        r = rows[-1]
        print(f"seed {seed} {variant:<44} " + " / ".join(f"{k} {100 * v[1]:5.1f}" for k, v in r["judged"].items())
              + f"; test worst {100 * r['test_worst']:5.1f}, accuracy {100 * r['test_accuracy']:.2f}", flush=True)

    add("before", ctx.fresh_model())
    for name, params in VARIANTS:
        add(f"{name} {json.dumps(params)}", run_strategy(ctx, name, params, ctx.config.seed))
    return rows


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def table(rows: list[dict]) -> None:
    seeds = sorted({r["seed"] for r in rows})
    rules = list(rows[0]["judged"])
    print(f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}); median images per scored group, per rule: "
          + ", ".join(f"{r} {rows[0]['sizes'][r]}" for r in rules))
    print("\n| rule | picks the test's best or within 2 points | regret (test worst group, points), per seed | mean regret | "
          "rank correlation with the test (median) |\n|---|---|---|---|---|")
    for rule in rules:
        agree, regrets, rhos = 0, [], []
        for s in seeds:
            rs = [r for r in rows if r["seed"] == s]
            base = next(r for r in rs if r["variant"] == "before")["judged"][rule]
            cands = [r for r in rs if r["variant"] != "before"]
            ok = [r for r in cands if does_no_harm(r["judged"][rule], base, MAX_LOSS)]
            best = max(r["test_worst"] for r in cands)
            pick = max(ok, key=lambda r: (r["judged"][rule][1], r["judged"][rule][0])) if ok else next(r for r in rs if r["variant"] == "before")
            regrets.append(100 * (best - pick["test_worst"]))
            agree += best - pick["test_worst"] < CLOSE
            rhos.append(_spearman([r["judged"][rule][1] for r in cands], [r["test_worst"] for r in cands]))
        print(f"| {rule} | {agree} of {len(seeds)} | {' / '.join(f'{v:.1f}' for v in regrets)} | {np.mean(regrets):.1f} | "
              f"{np.median(rhos):+.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_planted_args(ap, seeds=5, work="bench/out/power-work")
    ap.add_argument("--out", default="bench/out/selection.jsonl")
    ap.add_argument("--table", default="", help="print the table of a finished run's JSON lines and stop")
    args = ap.parse_args()
    if args.table:
        table([json.loads(line) for line in Path(args.table).read_text().splitlines()])
        return
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if any(r["seed"] == seed for r in rows):
            continue
        rows += one(args.dataset, seed, args.rho, args.target, args.lr, Path(args.work), args.set)  # the same models as bench/repair.py
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table(rows)


if __name__ == "__main__":
    main()
