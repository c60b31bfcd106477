"""Fault injection (issue 23): stop a stage at a seeded random moment with SIGINT, SIGTERM or
SIGKILL, check what the stop left, rerun the same command, and check that the rerun ends with
the result of an uninterrupted run and that every invariant of ``i2x doctor`` holds.

    python bench/faults.py --points 50 --seed 0          # the full sweep (about an hour on 2 cores)
    python bench/faults.py --points 6 --stages train,report

Each point runs in its own work folder (so the stage really redoes its work and resumes from
what the stop left), against one private tracking store, Optuna storage and reference: the
stages run once uninterrupted first, and their durations set the window in which the signal
lands (20-70% of the stage's reference time, so that most land mid-work; a point whose command
ends first, on a machine quieter than the reference's, runs again at half the delay, twice at
most). The signal goes to the command's process group, as Ctrl-C or ``kill -- -PGID`` sends it.

What is checked per point:
- **the stop**: SIGINT/SIGTERM exit with 128 + the signal, print exactly one ``i2x: stopped by
  <SIGNAL>`` line naming that signal and no traceback, and leave no violation; SIGKILL may
  leave only runs and trials whose holder is gone (the next holder closes them);
- **the rerun**: exit 0, its result equal to the reference (train: the final weights bit for
  bit; explain: the explanation without its timestamps; report: the page; main: both; tune:
  the number of finished trials and the strategies summarised, as a resumed study retries a killed trial
  under another sampler state), and 0 violations after it.

Prints a line per point and the totals; ``--out`` keeps one JSON row per point.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("train", "explain", "tune", "report", "main")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
TIMEOUT_S = 900
MISSED_RETRIES = 2  # a point whose command ended before its signal runs again, in a new folder, at half the delay


@dataclass
class Point:
    stage: str
    signum: int
    delay_s: float
    landed: bool = False  # the signal arrived before the command ended
    stop_ok: bool = True
    stop_problem: str = ""
    rerun_ok: bool = True
    same_result: bool = True
    violations_after_stop: int = 0
    violations_after_rerun: int = 0
    checks: int = 0
    seconds: float = 0.0


class Lab:
    """A private store, study storage and work root; the reference runs of every stage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = f"sqlite:///{root}/mlflow.db"
        self.storage = f"sqlite:///{root}/optuna.db"
        self.ref: dict[str, Any] = {}
        self.took: dict[str, float] = {}
        import mlflow

        os.environ["MLFLOW_TRACKING_URI"] = self.store  # this process's reads (fingerprints, doctor)
        mlflow.set_tracking_uri(self.store)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update({"MLFLOW_TRACKING_URI": self.store, "I2X_OPTUNA_STORAGE": self.storage, "I2X_CACHE_DIR": str(self.root / "cache"),
                    "PYTHONPATH": str(ROOT), "I2X_PROGRESS_EVERY": "5", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})
        return env

    def argv(self, stage: str, work: Path) -> list[str]:
        over = ["--config", "smoke", "--overrides", f"work_dir={work}"]
        cli = [sys.executable, "-m", "i2x.cli"]
        return {
            "train": [*cli, "train", *over],
            "explain": [*cli, "explain", "--run-id", self.ref.get("train_id", ""), *over],
            "tune": [*cli, "tune", "--run-id", self.ref.get("explain_id", ""), "--study", f"faults-{work.name}", *over],
            "report": [*cli, "report", "--run-id", self.ref.get("explain_id", "")],
            "main": [*cli, "main", *over],
        }[stage]

    def start(self, stage: str, work: Path) -> subprocess.Popen:
        return subprocess.Popen(self.argv(stage, work), env=self.env(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def finish(self, stage: str, work: Path) -> tuple[int, str]:
        proc = self.start(stage, work)
        out, err = proc.communicate(timeout=TIMEOUT_S)
        return proc.returncode, out + err

    def newest(self, stage: str, work: Path | None) -> str:
        """The newest FINISHED run of ``stage`` whose work folder lies under ``work``."""
        import mlflow

        client = mlflow.MlflowClient()
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  f"tags.`i2x.stage` = '{stage}' and attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
        for run in runs:
            if work is None or run.data.tags.get("i2x.work_dir", "").startswith(str(work)):
                return str(run.info.run_id)
        raise RuntimeError(f"no FINISHED {stage} run under {work}")

    def fingerprint(self, stage: str, work: Path) -> str:
        import mlflow

        client = mlflow.MlflowClient()
        if stage == "main":
            tags = client.get_run(self.newest("main", None)).data.tags
            return self._train_fp(tags["i2x.train_run"]) + self._explain_fp(tags["i2x.explain_run"])
        if stage == "train":
            return self._train_fp(self.newest("train", work))
        if stage == "explain":
            return self._explain_fp(self.newest("explain", work))
        if stage == "report":
            return self._artifact_sha(self.ref["explain_id"], "report/index.html")
        summary = json.loads(mlflow.artifacts.load_text(f"runs:/{self.newest('tune', work)}/tuning/summary.json"))
        # finished trials: a killed trial stays in the study as one FAIL and is retried, so the total is one more
        return json.dumps({"n_finished": summary["study"]["n_finished"], "strategies": sorted(summary["strategies"])})

    def _artifact_sha(self, run_id: str, path: str) -> str:
        import mlflow

        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tempfile.mkdtemp(dir=self.root))
        return hashlib.sha256(Path(local).read_bytes()).hexdigest()

    def _train_fp(self, run_id: str) -> str:
        import mlflow
        import torch

        client = mlflow.MlflowClient()
        last = sorted(a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".pt"))[-1]
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=last, dst_path=tempfile.mkdtemp(dir=self.root))
        weights = torch.load(local, map_location="cpu", weights_only=True)["model"]
        digest = hashlib.sha256()
        for key in sorted(weights):
            digest.update(key.encode() + weights[key].cpu().numpy().tobytes())
        return f"{last}:{digest.hexdigest()}"

    def _explain_fp(self, run_id: str) -> str:
        import mlflow

        doc = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/explanation/explanation.json"))
        for key in [*doc.get("timestamp_fields", []), "timestamp_fields"]:
            doc.pop(key, None)
        doc["run"].pop("train_run_id", None)
        doc["config"].pop("work_dir", None)  # each point's own folder, by design
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def doctor(self) -> Any:
        from i2x.runs.doctor import doctor

        # a stage before tune has made no Optuna storage yet, and doctor refuses a storage that is not there
        made = not self.storage.startswith("sqlite:///") or Path(self.storage.removeprefix("sqlite:///")).is_file()
        return doctor(True, self.storage if made else "", self.root / "work")


def prepare(lab: Lab, stages: list[str]) -> None:
    """The uninterrupted reference of each stage (and what the later stages read)."""
    wanted = set(stages) | ({"train"} if {"explain", "tune", "report"} & set(stages) else set()) | (
        {"explain"} if {"tune", "report"} & set(stages) else set())
    for stage in (s for s in STAGES if s in wanted):
        work = lab.root / "work" / f"ref-{stage}"
        start = time.perf_counter()
        code, text = lab.finish(stage, work)
        if code != 0:
            raise RuntimeError(f"reference {stage} failed ({code}):\n{text[-2000:]}")
        lab.took[stage] = time.perf_counter() - start
        if stage in ("train", "explain"):
            lab.ref[f"{stage}_id"] = lab.newest(stage, work)
        lab.ref[stage] = lab.fingerprint(stage, work)
        if stage != "main":  # a first run fills caches (data, the tune's early model): the points run warm, so time a warm run
            start = time.perf_counter()
            code, text = lab.finish(stage, lab.root / "work" / f"ref-{stage}-warm")
            if code != 0:
                raise RuntimeError(f"warm reference {stage} failed ({code}):\n{text[-2000:]}")
            lab.took[stage] = min(lab.took[stage], time.perf_counter() - start)
        print(f"reference {stage}: {lab.took[stage]:.0f} s (warm)", flush=True)


def inject(lab: Lab, point: Point, index: int, attempt: int = 0) -> Point:
    start = time.perf_counter()
    work = lab.root / "work" / (f"point-{index:03d}" + (f"-{attempt}" if attempt else ""))
    proc = lab.start(point.stage, work)
    try:
        out, err = proc.communicate(timeout=point.delay_s)
        point.landed = False  # it ended first: nothing was injected
    except subprocess.TimeoutExpired:
        point.landed = True
        os.killpg(proc.pid, point.signum)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    if point.landed:
        _judge_stop(lab, point, proc.returncode, err)
    code, text = lab.finish(point.stage, work)
    point.rerun_ok = code == 0
    if not point.rerun_ok:
        point.stop_problem += f" rerun exit {code}: {text[-600:]}"
    else:
        point.same_result = lab.fingerprint(point.stage, work) == lab.ref[point.stage]
    found = lab.doctor()
    point.violations_after_rerun, point.checks = len(found.violations), point.checks + found.checks
    if found.violations:
        point.stop_problem += " after rerun: " + "; ".join(found.violations[:3])
    point.seconds = time.perf_counter() - start
    return point


def _judge_stop(lab: Lab, point: Point, code: int, err: str) -> None:
    name = signal.Signals(point.signum).name
    found = lab.doctor()
    point.checks += found.checks
    # SIGKILL: the process cannot end its run or its trial; the next holder does (checked after the rerun)
    tolerated = [v for v in found.violations if point.signum == signal.SIGKILL and ("is RUNNING but its holder" in v or "is RUNNING but its worker" in v)]
    point.violations_after_stop = len(found.violations) - len(tolerated)
    problems = [f"violation: {v}" for v in found.violations if v not in tolerated]
    if point.signum != signal.SIGKILL:
        stops = [line for line in err.splitlines() if line.startswith("i2x: stopped by")]
        if code not in (128 + point.signum, 0):  # 0: it was already past its last stop point
            problems.append(f"exit {code}, expected {128 + point.signum}")
        if code != 0 and (len(stops) != 1 or name not in stops[0]):
            problems.append(f"stop lines {stops}")
        if "Traceback" in err:
            problems.append("a traceback: " + err[err.index("Traceback"):][:300].replace("\n", " | "))
    point.stop_ok = not problems
    point.stop_problem = "; ".join(problems)


def plan_points(n: int, seed: int, stages: list[str], took: dict[str, float]) -> list[Point]:
    rng = random.Random(seed)
    weights = {"train": 5, "explain": 2, "tune": 2, "report": 3, "main": 0}  # main (minutes a point) only once
    pool = [s for s in stages for _ in range(weights[s])]
    points = []
    for i in range(n):
        stage = stages[i] if i < len(stages) else rng.choice(pool)  # every stage at least once
        points.append(Point(stage, int(SIGNALS[i % 3] if i < 3 * len(stages) else rng.choice(SIGNALS)),
                            round(rng.uniform(0.2, 0.7) * took[stage], 2)))
    return points


def sweep(root: Path, n: int, seed: int, stages: list[str], out: Path | None = None) -> list[Point]:
    lab = Lab(root)
    prepare(lab, stages)
    points = []
    for i, point in enumerate(plan_points(n, seed, stages, lab.took)):
        done = inject(lab, point, i)
        for retry in range(1, MISSED_RETRIES + 1):  # it ended before the signal (a quieter machine than the reference's)
            if done.landed:
                break
            print(f"point {i + 1}/{n}: {done.stage} ended before {done.delay_s:.1f} s; again at half the delay", flush=True)
            done = inject(lab, Point(point.stage, point.signum, round(point.delay_s / 2 ** retry, 2)), i, attempt=retry)
        points.append(done)
        ok = done.stop_ok and done.rerun_ok and done.same_result and not done.violations_after_rerun
        print(f"point {i + 1}/{n}: {done.stage} {signal.Signals(done.signum).name} at {done.delay_s:.1f} s "
              f"{'landed' if done.landed else 'missed (it had ended)'}: {'ok' if ok else 'FAILED ' + done.stop_problem} ({done.seconds:.0f} s)",
              flush=True)
        if out is not None:
            with out.open("a") as fh:
                fh.write(json.dumps(asdict(done)) + "\n")
    return points


def totals(points: list[Point]) -> str:
    landed = [p for p in points if p.landed]
    return (f"{len(landed)} of {len(points)} points injected mid-work; {sum(p.checks for p in points)} invariant checks; "
            f"violations after a stop {sum(p.violations_after_stop for p in points)}, after a rerun {sum(p.violations_after_rerun for p in points)}; "
            f"bad stops {sum(not p.stop_ok for p in points)}; failed reruns {sum(not p.rerun_ok for p in points)}; "
            f"results that differ from the uninterrupted run {sum(not p.same_result for p in points)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", default="bench/out/faults.jsonl")
    parser.add_argument("--root", default="", help="folder for the store and work folders (default: a new temp folder)")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="i2x-faults-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    points = sweep(root, args.points, args.seed, args.stages.split(","), out)
    print(totals(points))


if __name__ == "__main__":
    main()
