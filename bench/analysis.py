"""Benchmark: wall time of every analysis stage, and how it grows with N and T.

Trains (once; later runs reuse the checkpoints) the default MNIST config with 16
checkpoints, then runs the whole I2X analysis for N in {1k, 5k, 10k} at T=8 and
T in {4, 8, 16} at N=10k. Goal (issue 3): 10,000 samples x 8 checkpoints under 5 min.
Not a test: nothing here asserts a speed.

    python bench/analysis.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from i2x.explanation.analysis import analyse
from i2x.platform.config_io import load_config
from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.training.data import _stratified_subset, load_data
from i2x.training.loop import resolve_device, run_folder, train

FRACTIONS = "[0.02,0.04,0.06,0.08,0.1,0.15,0.2,0.25,0.3,0.4,0.5,0.65,0.8]"  # + 3 epoch ends = 16
STAGES = ("saliency", "prototypes", "intensity", "patterns", "regression", "structure")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--work-dir", default="mlruns/i2x-work/bench")
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--checkpoints", default="4,8,16")
    parser.add_argument("--config", default="mnist")
    parser.add_argument("--overrides", default="")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(t) for t in args.checkpoints.split(",")]
    n_max, t_main = max(sizes), 8 if 8 in counts else counts[len(counts) // 2]
    extra = f",{args.overrides}" if args.overrides else ""
    config = load_config(args.config, f"data.root={args.data_dir},data.analysis_size={n_max},work_dir={args.work_dir},"
                                      f"train.checkpoint_fractions={FRACTIONS}{extra}")
    data = load_data(config.data, config.seed, config.plant)
    folder = run_folder(config)
    files = list_checkpoints(folder)
    if len(files) < max(counts):
        start = time.perf_counter()
        train(config, data, folder, progress=False)
        files = list_checkpoints(folder)
        print(f"trained {len(files)} checkpoints in {time.perf_counter() - start:.0f} s")
    device = resolve_device(config.train.device)
    images_all, labels_all = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]

    def run(n: int, t: int) -> dict[str, float]:
        pick = _stratified_subset(labels_all, n, torch.Generator().manual_seed(0)) if n < len(labels_all) else torch.arange(len(labels_all))
        chosen = [files[i] for i in np.linspace(0, len(files) - 1, t).round().astype(int)]
        payloads = [read_checkpoint(f) for f in chosen]
        start = time.perf_counter()
        result = analyse(t, lambda i: model_from_checkpoint(payloads[i], str(chosen[i])), images_all[pick], labels_all[pick],
                         data.num_classes, config.explain, config.seed, device, progress=False)
        total = time.perf_counter() - start
        row = {**result.timings, "total": total, "n_uncertain": len(result.structure.uncertain),
               "noise": float((result.groups == -1).mean())}
        print(f"  N={len(pick):>6} T={t:>2}: total {total:6.1f} s | " + " ".join(f"{s} {result.timings[s]:.1f}" for s in STAGES), flush=True)
        return row

    print(f"device={device}, threads={torch.get_num_threads()}, K={config.explain.n_prototypes}, model={config.model.name}")
    rows = {}
    for n in sizes:
        rows[(n, t_main)] = run(n, t_main)
    for t in counts:
        if (n_max, t) not in rows:
            rows[(n_max, t)] = run(n_max, t)

    print(f"\n| N | T | {' | '.join(STAGES)} | total (s) |")
    print("|---|---|" + "---|" * (len(STAGES) + 1))
    for (n, t), r in sorted(rows.items()):
        print(f"| {n} | {t} | " + " | ".join(f"{r[s]:.1f}" for s in STAGES) + f" | {r['total']:.1f} |")

    def slope(a: tuple[int, int], b: tuple[int, int], x_a: int, x_b: int, stage: str) -> float:
        return math.log(max(rows[b][stage], 1e-6) / max(rows[a][stage], 1e-6)) / math.log(x_b / x_a)

    lo_n, hi_n = (min(sizes), t_main), (n_max, t_main)
    lo_t, hi_t = (n_max, min(counts)), (n_max, max(counts))
    print("\nGrowth exponents (time ~ x^e; 1 = linear):")
    print("| stage | e in N | e in T |")
    print("|---|---|---|")
    for s in (*STAGES, "total"):
        print(f"| {s} | {slope(lo_n, hi_n, min(sizes), n_max, s):.2f} | {slope(lo_t, hi_t, min(counts), max(counts), s):.2f} |")
    main_row = rows.get((10000, 8))
    if main_row:
        print(f"\nN=10000, T=8: {main_row['total']:.1f} s total (goal < 300 s)")


if __name__ == "__main__":
    main()
