"""Benchmark: the whole protocol as users run it, `mlflow run . -P dataset=mnist`, timed.

Runs train -> explain -> tune (study + controls) with the default config, prints the wall
time of each stage (from the MLflow runs) and writes the paper-format table: test accuracy
and the focal pair's confusions (both directions) per strategy, mean +- std over seeds.
Not a test: nothing asserts a speed or a gain.

    python bench/paper_protocol.py --data-dir ../shared/datasets [--dataset mnist] [--overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--overrides", default="")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "paper_protocol.md"))
    args = parser.parse_args()
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-P", f"dataset={args.dataset}", "-P", f"data_dir={args.data_dir}",
           "-P", f"overrides={args.overrides}", "--env-manager", "local"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"mlflow run failed:\n{proc.stderr[-3000:]}")
    ids = re.search(r"train run (\w+), explain run (\w+), tune run (\w+)", proc.stdout + proc.stderr)
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    stages = dict(zip(("train", "explain", "tune"), ids.groups(), strict=True))
    runs = {name: client.get_run(rid) for name, rid in stages.items()}
    lines = [f"# `mlflow run . -P dataset={args.dataset}` ({args.overrides or 'default config'})", "",
             f"Total wall time: {total / 60:.1f} min", "", "| stage | wall time (min) |", "|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {(run.info.end_time - run.info.start_time) / 60000:.1f} |")
    lines.append(f"\nTest accuracy of the trained model: {runs['train'].data.metrics.get('test_accuracy', float('nan')):.4f}")
    summary = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=stages["tune"], artifact_path="tuning/summary.json")).read_text())
    from i2x.tuning.comparison import summary_markdown

    model = runs["train"].data.tags.get("i2x.model", "?")
    lines += ["", f"{args.dataset}, {model}, {len(summary['strategies']['tuned']['seeds'])} seeds:", "", summary_markdown(summary),
              f"Best trial: {json.dumps(summary['best_trial'].get('params', {}))}",
              f"Pareto front (val accuracy, focal val confusions): {json.dumps([t['values'] for t in summary.get('pareto', [])])}",
              f"Runs: {json.dumps(stages)}"]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
