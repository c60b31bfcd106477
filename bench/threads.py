"""Torch threads per process when two processes share a 2-core machine (the test suite's case).

``make test`` runs two pytest workers (pytest-xdist), and many tests start a subprocess of
their own, so two or three torch processes are often busy at once. Each starts with one intra-op
thread per core, so two of them ask for twice the cores there are. This measures whether that
costs time: the same training (the smoke config, ``--repeats`` times) in ``--procs`` processes
at once, first with torch's default threads, then with ``OMP_NUM_THREADS=1`` (torch takes its
intra-op count from it), and prints the wall time of each and their ratio. One process alone
with each setting is measured too: the cost of one thread when nothing else runs.

    python bench/threads.py --procs 2
    I2X_DATA_DIR=../shared/datasets python bench/threads.py --config mnist --overrides data.train_limit=3000,train.epochs=1 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORK = """
import sys, torch
from pathlib import Path
from i2x.platform.config_io import load_config
from i2x.training.data import load_data
from i2x.training.loop import train
work = Path(sys.argv[1])
for r in range(int(sys.argv[2])):
    config = load_config(sys.argv[3], f"work_dir={work / str(r)},{sys.argv[4]}")
    train(config, load_data(config.data, config.seed, config.plant), work / str(r) / "run", progress=False)
print(torch.get_num_threads())
"""


def wall(procs: int, threads: str, repeats: int, config: str = "smoke", overrides: str = "train.epochs=3") -> tuple[float, str]:
    """Seconds until ``procs`` concurrent trainings all end, and the threads each used."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        running = [subprocess.Popen([sys.executable, "-c", WORK, str(Path(tmp) / str(i)), str(repeats), config, overrides], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(procs)]
        used = {p.communicate()[0].strip() for p in running}
        return time.perf_counter() - start, ",".join(sorted(used))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="smoke", help="the config trained (mnist: set I2X_DATA_DIR)")
    ap.add_argument("--overrides", default="train.epochs=3")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; each process trains {args.config} ({args.overrides}) {args.repeats} times")
    print("| processes at once | torch threads each | wall s | ratio to default |")
    print("|---|---|---|---|")
    for procs in (1, args.procs):
        base, used = wall(procs, "", args.repeats, args.config, args.overrides)
        print(f"| {procs} | {used} (default) | {base:.1f} | 1.00 |", flush=True)
        one, used = wall(procs, "1", args.repeats, args.config, args.overrides)
        print(f"| {procs} | {used} (OMP_NUM_THREADS=1) | {one:.1f} | {one / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
