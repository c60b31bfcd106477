"""Does tune's held-out set choose the repair the test split would? (issue 22)

Tune picks an i2x strategy by the worst i2x group on its held-out set: validation images in
which the finding's cells are pasted into other classes' images and erased (the image mean)
from its class's images. On planted MNIST (`make run CONFIG=mnist-shortcut`) it chose
i2x-groups (held-out worst group 0.66) over i2x-augment (0.38), while the test split, marked in
half of every class, ranked them the other way (78.8% against 91.0%). This bench trains and
explains the planted data per seed (as ``bench/repair.py`` does), fine-tunes the final model by
a fixed set of strategy variants, and prints, per variant, the held-out set's worst group (and
which kind of edit it is: erased, pasted, as it was) next to the test split's worst true group,
with the rank agreement (Spearman) and whether both pick the same variant.

    python bench/selection.py --seeds 3

(The swap-out row of docs/benchmarks.md, the cue taken out with a real image's pixels, ran with
``--take-out swap-out`` of this bench at commit a1150e0; tune did not adopt it.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.repair import add_planted_args, prepare  # noqa: E402
from i2x.training.loop import predictions  # noqa: E402
from i2x.tuning.guided import run_strategy, score  # noqa: E402

VARIANTS = [("erm", {}), ("i2x-augment", {"how": "swap", "share": 0.5}), ("i2x-augment", {"how": "mask", "share": 0.5}),
            ("i2x-augment", {"how": "blur", "share": 0.5}), ("i2x-groups", {"power": 1.0}), ("i2x-groups", {"power": 0.5}),
            ("i2x-dfr", {"C": 1.0})]


def heldout_parts(ctx) -> dict[str, np.ndarray]:
    """The scoring half of the held-out set, by the edit each image got."""
    h = ctx.held
    part = ~h.fit
    cls = ctx.finding.cls
    y = h.y.numpy()
    had = ctx.cells[ctx.data.val_idx].flatten(1).any(1).numpy()
    now = h.groups % 2 == 1
    kinds = {"class, cue kept": (y == cls) & had & now, "class, cue erased": (y == cls) & had & ~now,
             "class, no cue": (y == cls) & ~had, "other, cue pasted": (y != cls) & now & ~had,
             "other, as it was": (y != cls) & ~now}
    return {k: v & part for k, v in kinds.items()}


def one(dataset: str, seed: int, rho: float, target: int, lr: float, work: Path) -> list[dict]:
    ctx, finding, _, _ = prepare(dataset, seed, rho, target, lr, work)
    if finding is None:
        print(f"seed {seed}: no shortcut check; nothing to choose", flush=True)
        return []
    parts = heldout_parts(ctx)
    h = ctx.held
    rows = []
    for name, params in [("before", {}), *VARIANTS]:
        model = ctx.fresh_model() if name == "before" else run_strategy(ctx, name, params, ctx.config.seed)
        pred = predictions(model, h.x, 1000, ctx.device).numpy()
        hit = pred == h.y.numpy()
        by_kind = {k: float(hit[m].mean()) for k, m in parts.items() if m.sum() >= 5}
        worst_kind = min(by_kind, key=by_kind.get)
        test = score(model, ctx, ctx.test_groups)
        rows.append({"seed": seed, "finding": finding.prototype, "variant": f"{name} {json.dumps(params)}" if params else name,
                     "heldout_worst": by_kind[worst_kind], "heldout_worst_kind": worst_kind, "heldout_by_kind": by_kind,
                     "test_worst": test["worst_group"], "test_accuracy": test["accuracy"]})
        print(f"seed {seed} {rows[-1]['variant']:<44} held-out worst {100 * by_kind[worst_kind]:5.1f} ({worst_kind}); "
              f"test worst {100 * test['worst_group']:5.1f}, accuracy {100 * test['accuracy']:.2f}", flush=True)
    return rows


def agreement(rows: list[dict]) -> None:
    from scipy.stats import spearmanr

    for seed in sorted({r["seed"] for r in rows}):
        sel = [r for r in rows if r["seed"] == seed and r["variant"].startswith("i2x-")]
        rho = spearmanr([r["heldout_worst"] for r in sel], [r["test_worst"] for r in sel]).statistic
        pick = max(sel, key=lambda r: r["heldout_worst"])
        best = max(sel, key=lambda r: r["test_worst"])
        print(f"seed {seed}: Spearman(held-out worst, test worst) over {len(sel)} i2x variants {rho:+.2f}; held-out picks "
              f"{pick['variant']} (test {100 * pick['test_worst']:.1f}), the test's best is {best['variant']} ({100 * best['test_worst']:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_planted_args(ap, seeds=3, work="bench/out/selection-work")
    ap.add_argument("--out", default="bench/out/selection.jsonl")
    args = ap.parse_args()
    rows = []
    for seed in range(args.seeds):
        rows += one(args.dataset, seed, args.rho, args.target, args.lr, Path(args.work) / f"seed-{seed}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    agreement(rows)


if __name__ == "__main__":
    main()
