"""What an explain costs, beside a reference version of the code (issue 21's budget).

Two cases, each run as a user runs it (``i2x train`` then ``i2x explain --run-id``, in a fresh
SQLite MLflow store), once with this checkout and once with ``--ref`` (a git commit, checked
out into a worktree under ``--out``), one after the other on the same machine:

- ``mnist``: the default MNIST config (compact CNN, 3 epochs, N = 2,000, the permutation null on);
- ``cifar10``: the CIFAR-10 config's fast net at N = 10,000 analysed images. Cut: the net trains
  on 12,000 images (``data.train_limit``) for the config's 10 epochs, so it has the same 13
  checkpoints and layers an explain walks as the full training, in a fifth of the time; the
  explain itself is not cut.

Measured per explain command: CPU seconds (user + system of the process and its threads, from
``getrusage`` of the waited child) and wall seconds. The table gives both versions and the ratio
(this checkout / reference). Budgets (issue 21): MNIST under 3 CPU-minutes, CIFAR-10 at N =
10,000 under 15 CPU-minutes.

    I2X_DATA_DIR=../shared/datasets python bench/explain_cost.py --ref 69f4849
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "mnist": ("--dataset", "mnist", ""),
    "cifar10": ("--dataset", "cifar10", "data.train_limit=12000,data.analysis_size=10000"),
}
BUDGET_CPU_S = {"mnist": 3 * 60, "cifar10": 15 * 60}


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run ``cmd``; its CPU seconds (user + system), wall seconds and output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"explain_cost: {' '.join(cmd[2:5])} failed with exit {proc.returncode} (log: {log})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, proc.stdout


def one(tree: Path, label: str, case: str, out: Path) -> dict:
    """Train and explain ``case`` with the code in ``tree``, in its own store and work folder."""
    folder = out / f"{label}-{case}"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "I2X_PROGRESS_EVERY": "600"}
    flag, dataset, overrides = CASES[case]
    work = f"work_dir={folder / 'work'}" + (f",{overrides}" if overrides else "")
    py = [sys.executable, "-m", "i2x.cli"]
    _, train_s, said = _timed(py + ["train", flag, dataset, "--overrides", work], folder, env, folder / "train.log")
    run_id = re.search(r"run ([0-9a-f]{32}) FINISHED", said).group(1)
    cpu, wall, said = _timed(py + ["explain", "--run-id", run_id], folder, env, folder / "explain.log")
    return {"case": case, "train_wall_s": round(train_s, 1), "explain_cpu_s": round(cpu, 1), "explain_wall_s": round(wall, 1)}


def _worktree(ref: str, out: Path) -> Path:
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    tree = out / f"tree-{sha}"
    if not (tree / "i2x").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True, capture_output=True)
    return tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="69f4849", help="the reference commit (default: main before issue 21's first commit, f5ad0b7); "
                    "'' measures this checkout alone (no ratio)")
    ap.add_argument("--cases", default="mnist,cifar10")
    ap.add_argument("--out", default="bench/out/explain-cost")
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    trees = [("this", ROOT)] + ([(f"ref {args.ref}", _worktree(args.ref, out))] if args.ref else [])
    results = out / "results.jsonl"
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []
    jobs = [(label, tree, case) for case in args.cases.split(",") for label, tree in trees
            if not any(r["tree"] == label and r["case"] == case for r in rows)]
    start = time.perf_counter()
    for i, (label, tree, case) in enumerate(jobs):
        row = {"tree": label} | one(tree, label.replace(" ", "-"), case, out)
        rows.append(row)
        with results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        eta = (time.perf_counter() - start) / (i + 1) * (len(jobs) - i - 1)
        print(f"[{i + 1}/{len(jobs)}] {label} {case}: explain {row['explain_cpu_s'] / 60:.2f} CPU-min, {row['explain_wall_s'] / 60:.2f} min wall "
              f"(train {row['train_wall_s'] / 60:.1f} min); ETA {eta / 60:.0f} min", flush=True)
    if len(trees) == 1:
        for r in rows:
            if r["tree"] == "this":
                print(f"{r['case']}: explain {r['explain_cpu_s'] / 60:.2f} CPU-min ({r['explain_wall_s'] / 60:.2f} min wall); budget "
                      f"{BUDGET_CPU_S[r['case']] / 60:.0f} CPU-min: {'within' if r['explain_cpu_s'] <= BUDGET_CPU_S[r['case']] else 'OVER'}")
        return
    print(f"\n| case | this checkout: CPU-min (wall) | {trees[1][0]}: CPU-min (wall) | ratio (CPU) | budget |")
    print("|---|---|---|---|---|")
    for case in args.cases.split(","):
        mine = next((r for r in rows if r["tree"] == "this" and r["case"] == case), None)
        ref = next((r for r in rows if r["tree"] == trees[1][0] and r["case"] == case), None)
        if mine and ref:
            print(f"| {case} | {mine['explain_cpu_s'] / 60:.2f} ({mine['explain_wall_s'] / 60:.2f}) | {ref['explain_cpu_s'] / 60:.2f} "
                  f"({ref['explain_wall_s'] / 60:.2f}) | {mine['explain_cpu_s'] / ref['explain_cpu_s']:.2f} | "
                  f"{BUDGET_CPU_S[case] / 60:.0f} CPU-min: {'within' if mine['explain_cpu_s'] <= BUDGET_CPU_S[case] else 'OVER'} |")


if __name__ == "__main__":
    main()
