"""The CI slice of the fault-injection sweep (issue 23; the full sweep is ``bench/faults.py``):
the smoke training stopped at seeded random moments by SIGINT, SIGTERM and SIGKILL, then
rerun. Each stop must leave the store true (one stop line naming the signal, no traceback, no
run RUNNING without a live holder except what SIGKILL leaves for the next holder), and each
rerun must end with the uninterrupted run's final weights, bit for bit, with every invariant of
``i2x doctor`` holding."""

from __future__ import annotations

import signal

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_training_stopped_at_random_moments_by_each_signal_resumes_to_the_same_weights(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.faults import sweep, totals

    points = sweep(tmp_path, 4, seed=0, stages=["train"])
    print(totals(points))
    landed = {p.signum for p in points if p.landed}  # mid-work, not after the command had ended
    assert landed == {int(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)}, [(p.signum, p.delay_s, p.landed) for p in points]
    assert all(p.checks > 0 for p in points)
    bad = [(p.stage, signal.Signals(p.signum).name, p.delay_s, p.stop_problem) for p in points
           if not (p.stop_ok and p.rerun_ok and p.same_result and p.violations_after_stop == 0 and p.violations_after_rerun == 0)]
    assert bad == [], bad
