"""Does tune's held-out set choose the repair the test split would? (issue 22)

Tune picks an i2x strategy by the worst i2x group on its held-out set (:mod:`i2x.tuning.heldout`):
validation images with the finding's cells pasted into other classes' images and taken out of
its class's images. This bench trains and explains the planted data per seed (as
``bench/repair.py`` does), fine-tunes the final model once by each of a fixed set of strategy
variants, and scores every model on the held-out set built each way of taking the cue out
(``mean``, ``swap-out``, ``blur``; i2x-dfr is refit on each) and on the test split by the true
groups. Then, per choosing rule, what it picks (with tune's do-no-harm rule: the held-out and
as-is validation accuracies within 1 point of the final model's, the held-out worst group
above it) and that pick's test worst group, over seeds; beside it, the fixed rules (always the
same variant) and the test's own best (the ceiling).

    python bench/selection.py --seeds 5
    python bench/selection.py --table bench/out/selection.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.power import mark_cell_ids  # noqa: E402
from bench.repair import add_planted_args, prepare  # noqa: E402
from i2x.tuning.guided import does_no_harm, run_strategy, score, validation_scores  # noqa: E402
from i2x.tuning.heldout import TAKE_OUT, heldout  # noqa: E402
from i2x.tuning.repair import retrain_last_layer  # noqa: E402

VARIANTS = [("i2x-augment", {"how": "swap", "share": 0.5}), ("i2x-augment", {"how": "mask", "share": 0.5}),
            ("i2x-augment", {"how": "blur", "share": 0.5}), ("i2x-groups", {"power": 1.0}), ("i2x-groups", {"power": 0.5}),
            ("i2x-dfr", {"C": 1.0})]
MAX_LOSS = 0.01


def judge(model, ctx, helds) -> dict[str, list[float]]:
    """Per way of taking the cue out: tune's ``validation_scores`` on that held-out set."""
    return {t: list(validation_scores(ctx, model, h)) for t, h in helds.items()}


def mark_share(ctx, prototype: int) -> float:
    """Share of the marked training images' mark cells assigned to ``prototype``: near 1 when
    the finding is the mark, not when it is a broad prototype that merely occurs in those images."""
    ids = mark_cell_ids(ctx.data.train_marks.numpy(), np.asarray(ctx.assignment), ctx.data.train_x.shape[-1])
    return float((ids == prototype).mean()) if len(ids) else 0.0


def one(dataset: str, seed: int, rho: float, target: int, lr: float, work: Path, extra: str = "") -> list[dict]:
    ctx, finding, _, _ = prepare(dataset, seed, rho, target, lr, work, extra)
    if finding is None:
        print(f"seed {seed}: no shortcut check; nothing to choose", flush=True)
        return []
    on_mark = mark_share(ctx, finding.prototype)
    helds = {t: heldout(ctx.data, ctx.cells, finding.cls, ctx.config.seed, t) for t in TAKE_OUT}
    rows = []

    def add(variant: str, model, refit_on: str | None = None) -> None:
        test = score(model, ctx, ctx.test_groups)
        rows.append({"seed": seed, "finding": finding.prototype, "finding_on_mark": on_mark, "variant": variant, "refit_on": refit_on,
                     "heldout": judge(model, ctx, helds), "test_worst": test["worst_group"], "test_accuracy": test["accuracy"]})
        r = rows[-1]
        print(f"seed {seed} {variant + (f' (refit on {refit_on})' if refit_on else ''):<52} held-out worst "
              + " / ".join(f"{t} {100 * r['heldout'][t][1]:5.1f}" for t in TAKE_OUT)
              + f"; test worst {100 * r['test_worst']:5.1f}, accuracy {100 * r['test_accuracy']:.2f}", flush=True)

    add("before", ctx.fresh_model())
    for name, params in VARIANTS:
        variant = f"{name} {json.dumps(params)}"
        if name != "i2x-dfr":
            add(variant, run_strategy(ctx, name, params, ctx.config.seed))
            continue
        for t, h in helds.items():  # i2x-dfr refits on the fit half of the held-out set it is judged by
            model = retrain_last_layer(ctx.fresh_model(), h.x[h.fit], h.y[h.fit], h.groups[h.fit], ctx.config.seed, ctx.device,
                                       c=float(params["C"]))
            add(variant, model, t)
    return rows


def candidates(rows: list[dict], refit_on: str) -> list[dict]:
    """The i2x variants of one seed as tune would see them when its held-out set takes the cue
    out by ``refit_on`` (i2x-dfr refit on that set)."""
    return [r for r in rows if r["variant"].startswith("i2x-") and r["refit_on"] in (None, refit_on)]


def pick(rows: list[dict], key, base: dict[str, list[float]], judged_by: list[str]) -> dict | None:
    """Tune's rule: do no harm on every way in ``judged_by``, then the best ``key``."""
    ok = [r for r in rows if all(does_no_harm(r["heldout"][t], base[t], MAX_LOSS) for t in judged_by)]
    return max(ok, key=key) if ok else None


def table(rows: list[dict]) -> None:
    seeds = sorted({r["seed"] for r in rows})
    by_seed = {s: [r for r in rows if r["seed"] == s] for s in seeds}
    rules = {}
    for t in TAKE_OUT:
        rules[f"held-out, cue taken out by {t}"] = lambda rs, b, t=t: pick(candidates(rs, t), lambda r: r["heldout"][t][1], b, [t])
    for judge in TAKE_OUT:  # cross-fit: i2x-dfr refit on one way, every variant judged by another
        for refit in TAKE_OUT:
            if refit != judge:
                rules[f"held-out by {judge}, i2x-dfr refit on {refit}"] = lambda rs, b, j=judge, f=refit: pick(
                    candidates(rs, f), lambda r: r["heldout"][j][1], b, [j])
    rules["held-out, worst over the three ways (i2x-dfr refit on mean)"] = lambda rs, b: pick(
        candidates(rs, "mean"), lambda r: min(r["heldout"][t][1] for t in TAKE_OUT), b, list(TAKE_OUT))
    fixed = sorted({r["variant"] for r in rows if r["variant"].startswith("i2x-") and r["refit_on"] in (None, "mean")})
    for v in fixed:
        rules[f"always {v}"] = lambda rs, b, v=v: next(r for r in rs if r["variant"] == v and r["refit_on"] in (None, "mean"))
    rules["the test's best (ceiling, reads the test)"] = lambda rs, b: max(candidates(rs, "mean"), key=lambda r: r["test_worst"])
    before = {s: next(r for r in rs if r["variant"] == "before") for s, rs in by_seed.items()}
    print(f"\n| rule | test worst group of the pick, seed {' / '.join(map(str, seeds))} | mean | picks |\n|---|---|---|---|")
    was = [before[s]["test_worst"] for s in seeds]
    print(f"| before (no repair) | {' / '.join(f'{100 * v:.1f}' for v in was)} | {100 * np.mean(was):.1f} | - |")
    for name, rule in rules.items():
        got = {s: rule(rs, before[s]["heldout"]) for s, rs in by_seed.items()}
        vals = [(got[s] or before[s])["test_worst"] for s in seeds]
        picks = "; ".join(f"{s}: {g['variant'] + (' ' + g['refit_on'] if g['refit_on'] else '') if g else 'declined'}" for s, g in got.items())
        print(f"| {name} | {' / '.join(f'{100 * v:.1f}' for v in vals)} | {100 * np.mean(vals):.1f} | {picks} |")
    def where(r: dict) -> str:
        share = r.get("finding_on_mark", r.get("finding_on_mark_centre"))  # files before 2026-11-30 hold the centre cell's share
        return f"P{r['finding']}" + ("" if share is None else f" {100 * share:.0f}%")

    print("\nfinding per seed (its share of the marked images' mark cells): "
          + "; ".join(f"{s}: {where(rs[0])}" for s, rs in by_seed.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_planted_args(ap, seeds=5, work="bench/out/selection-work")
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
        rows += one(args.dataset, seed, args.rho, args.target, args.lr, Path(args.work) / f"seed-{seed}", args.set)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table(rows)


if __name__ == "__main__":
    main()
