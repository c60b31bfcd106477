"""Benchmark: one replicate of the permutation null, refitting the permuted rows (as before)
against :class:`i2x.explanation.patterns.PermutedFits` (a large group's sums from every row's,
computed once), one replicate at a time and ``REPLICATE_BATCH`` together (as the null runs
them: one product over dP per interval for the whole batch), on arrays shaped as the real
runs' (random values; only the shapes, the share of HDBSCAN noise and the group count matter
for the time). Timed as the null runs, on one BLAS thread, in CPU seconds of this process.
Prints CPU seconds per replicate and the ratio, both measured here; the fits agree to float64 rounding
(tests/test_patterns.py). Not a test: nothing here asserts a speed.

    python bench/null_replicates.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from i2x.explanation.nulls import REPLICATE_BATCH, within_class
from i2x.explanation.patterns import PermutedFits, fit_group_betas

# (name, intervals T-1, N, K, classes M, HDBSCAN noise share, groups besides noise): as measured
# on the default MNIST explain (noise 0.61) and the CIFAR-10 fast net at N = 10,000 (noise 0.98)
SHAPES = [("mnist default, N = 2,000", 5, 2000, 32, 10, 0.61, 8), ("cifar10 fast net, N = 10,000", 12, 10000, 128, 10, 0.98, 4)]


def _time(fn, reps: int) -> float:
    """CPU seconds per call of ``fn`` on one BLAS thread (the null's setting), after one warm-up."""
    with threadpool_limits(limits=1, user_api="blas"):
        fn()
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        return (time.process_time() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    print(f"| shape | refit: CPU-s per replicate | from sums | from sums, {REPLICATE_BATCH} together | speed-up (refit / together) "
          "| 3,200 replicates: refit / together |")
    print("|---|---|---|---|---|---|")
    for name, t, n, k, m, noise, extra in SHAPES:
        rng = np.random.default_rng(0)
        dp, dy = rng.normal(size=(t, n, k)).astype(np.float32), rng.normal(size=(t, n, m)).astype(np.float32)
        groups = np.where(rng.random((t, n)) < noise, -1, rng.integers(0, extra, (t, n)))
        labels = rng.integers(0, m, n)
        members_of = [np.flatnonzero(labels == c) for c in range(m)]
        perms = np.stack([within_class(members_of, n, rng) for _ in range(REPLICATE_BATCH)])  # as the null permutes
        perm = perms[0]
        fitter = PermutedFits(dp, dy, groups, 1.0)
        slow = _time(lambda dp=dp, dy=dy, groups=groups, perm=perm: fit_group_betas(dp[:, perm], dy, groups, 1.0, 0, 0, score=False), args.reps)
        fast = _time(lambda fitter=fitter, perm=perm: fitter.fits(perm), args.reps)
        many = _time(lambda fitter=fitter, perms=perms: fitter.fits_many(perms), max(1, args.reps // 4)) / REPLICATE_BATCH
        print(f"| {name} | {slow:.4f} | {fast:.4f} | {many:.4f} | {slow / many:.1f}x | {3200 * slow / 60:.1f} / {3200 * many / 60:.1f} min |",
              flush=True)


if __name__ == "__main__":
    main()
