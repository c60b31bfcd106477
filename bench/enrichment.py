"""The data side of the rigid-copy step on its own: how often the scan's enrichment test passes
for a planted mark (power), and for anything at all on shuffled labels (false), by the share
``rho`` of the planted class's training images that hold the mark, the number ``N`` of
analysed images and the correction (label-permutation min-P against Bonferroni).

A stated copy needs this test *and* the paste test on the trained model (``bench/power.py``);
the paste test needs a model, this does not, so it runs over many more seeds in minutes. On
shuffled labels nothing is enriched, so the share of seeds where any candidate passes is the
test's family-wise error, and it bounds the false copies a model trained on them can get.
On the clean data set the share with a candidate for the planted class in the mark's corner
bounds the clean runs' false statements of the kind ``bench/power.py`` counts.

    I2X_DATA_DIR=../shared/datasets python bench/enrichment.py --rho 0.1,0.05 --n 2000,5000 --seeds 10 --shuffled 40
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.power import PLANT, SETTINGS, _share  # noqa: E402
from i2x.explanation.copies import scan  # noqa: E402
from i2x.platform.config import FaithfulnessConfig  # noqa: E402
from i2x.platform.config_io import load_config  # noqa: E402
from i2x.training.data import load_data  # noqa: E402


def analysed(dataset: str, rho: float | None, seed: int, n: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The analysis images in [0, 1], their labels and their mark boxes (None: no plant), as
    ``bench/power.py``'s run of the same (rho, seed, N) explains them."""
    name, cut = SETTINGS[dataset]
    plant = f",{PLANT},plant.classes=[{target}],plant.rho={rho}" if rho is not None else ""
    config = load_config(name, f"seed={seed},{cut},data.analysis_size={n}{plant}")
    data = load_data(config.data, config.seed, config.plant)
    idx = data.analysis_idx
    marks = data.train_marks[idx].numpy() if data.train_marks is not None else None
    return data.train_x[idx].float().numpy() / 255, data.train_y[idx].numpy(), marks


def in_mark(window: tuple[int, int, int, int], marks: np.ndarray) -> bool:
    """Whether a scan window ``(y0, y1, x0, x1)`` lies inside the (fixed) planted mark."""
    box = marks[marks[:, 0] >= 0][0]
    y0, y1, x0, x1 = window
    return bool(y0 >= box[0] and x0 >= box[1] and y1 <= box[2] and x1 <= box[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(SETTINGS), default="cifar10")
    ap.add_argument("--rho", default="0.1,0.05")
    ap.add_argument("--n", default="2000")
    ap.add_argument("--seeds", type=int, default=5, help="planted seeds per (rho, N)")
    ap.add_argument("--shuffled", type=int, default=20, help="label shuffles of the clean data per N (the false rate; 0: no controls)")
    ap.add_argument("--clean", type=int, default=5, help="clean seeds per N: a candidate for the target class in the mark's corner "
                    "(0: no controls)")
    ap.add_argument("--grid", type=int, default=8, help="the final feature map's side (8: the power cut's CNN on 32-pixel images)")
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument("--target", type=int, default=7)
    ap.add_argument("--null-seeds", type=int, default=1, help="permutation seeds of min-P per planted set: is its verdict the same under each")
    args = ap.parse_args()
    cfg, grid, alpha = FaithfulnessConfig(), (args.grid, args.grid), FaithfulnessConfig().alpha
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def both(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[dict, list, list]:
        t0 = time.perf_counter()
        bonf, tries = scan(x, y, grid, cfg.copy_tolerance, cfg.copy_min_images, permutations=0)
        t1 = time.perf_counter()
        perm, _ = scan(x, y, grid, cfg.copy_tolerance, cfg.copy_min_images, permutations=args.permutations, seed=seed)
        return {"tries": tries, "bonferroni_s": t1 - t0, "min_p_s": time.perf_counter() - t1}, bonf, perm

    print("| rho | N | seeds | marked images of the class (mean) | mark passes, Bonferroni | mark passes, min-P "
          "| mark's corrected p, Bonferroni | mark's corrected p, min-P | tests | scan s (Bonferroni / min-P) | min-P verdict the same under every null seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in [int(v) for v in args.n.split(",")]:
        for rho in [float(v) for v in args.rho.split(",")]:
            rows = []
            for seed in range(args.seeds):
                x, y, marks = analysed(args.dataset, rho, seed, n, args.target)
                info, bonf, perm = both(x, y, seed)
                pick = [min((c[4] for c in found if c[1] == args.target and in_mark(c[2], marks)), default=1.0) for found in (bonf, perm)]
                again = [min((c[4] for c in scan(x, y, grid, cfg.copy_tolerance, cfg.copy_min_images, permutations=args.permutations,
                                                     seed=1000 * k + seed)[0] if c[1] == args.target and in_mark(c[2], marks)), default=1.0)
                         for k in range(1, args.null_seeds)]
                info["same_verdict"] = all((p < alpha) == (pick[1] < alpha) for p in again)
                rows.append((int(((marks[:, 0] >= 0) & (y == args.target)).sum()), *pick, info))
            marked, pb, pm = (np.array([r[i] for r in rows]) for i in range(3))
            print(f"| {rho:g} | {n} | {len(rows)} | {marked.mean():.1f} | {_share(int((pb < alpha).sum()), len(rows))} "
                  f"| {_share(int((pm < alpha).sum()), len(rows))} | {', '.join(f'{p:.2g}' for p in pb)} "
                  f"| {', '.join(f'{p:.2g}' for p in pm)} | {rows[0][3]['tries']:,} "
                  f"| {np.mean([r[3]['bonferroni_s'] for r in rows]):.1f} / {np.mean([r[3]['min_p_s'] for r in rows]):.1f} "
                  f"| {sum(r[3]['same_verdict'] for r in rows)} of {len(rows)} ({args.null_seeds} seeds) |", flush=True)
        if not args.shuffled or not args.clean:
            continue
        x, y, _ = analysed(args.dataset, None, 0, n, args.target)
        rng = np.random.default_rng(n)
        false_b = false_m = 0
        for i in range(args.shuffled):
            _, bonf, perm = both(x, rng.permutation(y), 100 + i)
            false_b += any(c[4] < alpha for c in bonf)
            false_m += any(c[4] < alpha for c in perm)
        print(f"N = {n}, shuffled labels ({args.shuffled} shuffles of the clean analysis set): any candidate enriched in "
              f"{_share(false_b, args.shuffled)} (Bonferroni), {_share(false_m, args.shuffled)} (min-P)", flush=True)
        corner = {"bonferroni": 0, "min-P": 0}
        passing = []
        for seed in range(args.clean):
            x, y, _ = analysed(args.dataset, None, seed, n, args.target)
            _, bonf, perm = both(x, y, seed)
            for name, found in (("bonferroni", bonf), ("min-P", perm)):
                corner[name] += any(c[1] == args.target and c[4] < alpha and min(c[2][1], c[2][3]) > x.shape[-2] // 2 for c in found)
            passing.append(sum(c[4] < alpha for c in perm))
        print(f"N = {n}, clean data ({args.clean} seeds): a candidate for class {args.target} in the bottom-right quarter enriched in "
              f"{corner['bonferroni']} (Bonferroni), {corner['min-P']} (min-P); enriched candidates of any class per seed (min-P): "
              f"{passing} (natural content one class holds; the paste test decides whether the model reads it)", flush=True)


if __name__ == "__main__":
    main()
