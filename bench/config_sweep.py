"""Random values for every config field, through the real CLI (issue 44): each is either refused
in one line before any run opens (exit 2, ``i2x: error: ...``, no run in the store), or runs the
smoke config to the end (``i2x main --config smoke``, every run FINISHED). Anything else, a
traceback, a FAILED run, a refusal after a run opened, is a finding of this sweep.

Values come from a seeded generator, per field: numbers across many orders of magnitude on both
sides of the field's bounds, 0, NaN and infinities, the wrong type, empty and one-item lists,
unknown choices, and values near the default (so that many are accepted and run). A value that
is accepted but would run past ``--cap-s`` (``train.epochs=9000`` is legal) is stopped and
counted as slow, not as a failure.

    python bench/config_sweep.py --per-field 1 --out bench/out/config-sweep.jsonl
    python bench/config_sweep.py --table bench/out/config-sweep.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2x.platform.config import SECTIONS, Config  # noqa: E402
from i2x.platform.config_io import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# what stderr may hold besides the error line: MLflow's INFO log and i2x's progress lines
ALLOWED = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.|i2x [\w -]+: |plan: |  )")
SKIP = {"work_dir", "data.root", "data.download", "train.device", "tune.storage", "tune.artifact_store", "train.register_as",
        "plant.group_file"}  # where the sweep's own run lives and what it may reach: set by the sweep, not drawn


def fields() -> list[tuple[str, typing.Any, typing.Any, typing.Any]]:
    """``(key, annotation, bounds, default)`` of every config field but :data:`SKIP`."""
    out = []
    top = typing.get_type_hints(Config)
    for name, section in [("", Config)] + [(s, top[s]) for s in SECTIONS]:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            if name == "" and f.name in SECTIONS:
                continue
            key = f"{name}.{f.name}" if name else f.name
            if key not in SKIP:
                out.append((key, hints[f.name], f.metadata.get("bounds"), f.default))
    return out


def _yaml(value: typing.Any) -> str:
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") if math.isinf(value) else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml(v) for v in value) + "]"
    return str(value)


def draw(rng: np.random.Generator, kind: typing.Any, bounds: typing.Any, default: typing.Any) -> typing.Any:
    """One random value for a field of type ``kind``."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = list(typing.get_args(kind))
        return rng.choice(choices + ["bogus"]) if rng.random() < 0.8 else ""
    if origin is tuple:
        item = typing.get_args(kind)[0]
        roll = rng.random()
        if roll < 0.15:
            return []
        n = int(rng.integers(1, 4))
        base = list(default) if default else []
        return [draw(rng, item, bounds, base[i % len(base)] if base else 0) for i in range(n)] if roll < 0.9 else ["x"]
    if kind is bool:
        return bool(rng.random() < 0.5) if rng.random() < 0.9 else "maybe"
    if kind is str:
        return rng.choice(["", "abc", "x" * 300, "../up", "name with spaces"])
    roll = rng.random()
    if roll < 0.08:
        return float(rng.choice([math.nan, math.inf, -math.inf]))
    if roll < 0.14:
        return "abc"
    if roll < 0.22:
        return 0
    if roll < 0.6 and isinstance(default, (int, float)) and not isinstance(default, bool):  # near the default: often accepted
        value = float(default or 1) * 2 ** rng.uniform(-2, 2)
    else:
        value = float(rng.choice([-1, 1])) * 10 ** rng.uniform(-3, 7)
    if kind is int:
        return int(round(value))
    return float(f"{value:.4g}")


def _runs(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id: r.info.status for r in client.search_runs(experiments)} if experiments else {}


def run_one(key: str, value: typing.Any, cap_s: float) -> dict[str, typing.Any]:
    """``i2x main --config smoke`` with ``key=value`` in a fresh folder; what happened."""
    override = f"{key}={_yaml(value)}"
    with tempfile.TemporaryDirectory(prefix="i2x-sweep-") as tmp:
        tmp_path = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "I2X_"))}
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", PYTHONPATH=str(ROOT), I2X_PROGRESS_EVERY="60",
                   I2X_CACHE_DIR=str(tmp_path / "cache"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
        small = "" if key.startswith("tune.") else "tune.n_trials=2,tune.seeds=2,"  # a short study, unless it is the key drawn
        argv = [sys.executable, "-m", "i2x.cli", "main", "--config", "smoke", "--overrides",
                f"work_dir={tmp_path / 'work'},tune.storage=sqlite:///{tmp_path}/optuna.db,{small}{override}"]
        start = time.perf_counter()
        try:
            out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=cap_s)
        except subprocess.TimeoutExpired:
            return {"key": key, "value": _yaml(value), "outcome": "slow", "seconds": cap_s, "line": ""}
        seconds = round(time.perf_counter() - start, 1)
        runs = _runs(tmp_path / "mlflow.db")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if out.returncode == 2 and last.startswith("i2x: error: ") and not runs and all(ALLOWED.match(x) for x in lines[:-1]):
        outcome = "refused"
    elif out.returncode == 0 and runs and set(runs.values()) == {"FINISHED"}:
        outcome = "finished"
    else:
        outcome = "problem"
        last = f"exit {out.returncode}, runs {sorted(runs.values())}: " + ("Traceback" if "Traceback" in out.stderr else "") + last
    return {"key": key, "value": _yaml(value), "outcome": outcome, "seconds": seconds, "line": last[:300]}


def accepted(key: str, value: typing.Any) -> bool:
    """Whether the config loader takes ``key=value`` (no run: what decides which draws will run)."""
    from i2x.platform.errors import I2XError
    from i2x.runs.runconfig import check_registered

    try:
        check_registered(load_config("smoke", f"{key}={_yaml(value)}"))
        return True
    except I2XError:
        return False


def sweep(seed: int, per_field: int, keys: list[str] | None = None, cap_s: float = 600.0, out: Path | None = None,
          only: int = 0, max_runs: int | None = None) -> list[dict[str, typing.Any]]:
    """Draw ``per_field`` values for every field (or ``keys``) and run each; ``only``: run a
    seeded sample of that many draws (the CI slice); ``max_runs``: of the draws the config loader
    accepts (each a whole `i2x main`, minutes), run only the first that many, and skip the rest
    (the CI slice: every refusal, one run). Each row says whether the loader ``accepted`` the
    value beforehand. Rows are appended to ``out`` as they come."""
    rng = np.random.default_rng(seed)
    draws = [(key, draw(rng, kind, bounds, default)) for key, kind, bounds, default in fields() if not keys or key in keys
             for _ in range(per_field)]
    if only:
        pick = np.random.default_rng([seed, 1]).choice(len(draws), size=min(only, len(draws)), replace=False)
        draws = [draws[i] for i in sorted(pick)]
    done = set()
    if out is not None and out.is_file():
        done = {(r["key"], r["value"]) for r in map(json.loads, out.read_text().splitlines())}
    rows = []
    start = time.perf_counter()
    runs = 0
    for i, (key, value) in enumerate(draws):
        if (key, _yaml(value)) in done:
            continue
        ok = accepted(key, value)
        if ok and max_runs is not None and runs >= max_runs:
            continue
        runs += ok
        row = {**run_one(key, value, cap_s), "accepted": ok}
        rows.append(row)
        if out is not None:
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        eta = (time.perf_counter() - start) / len(rows) * (len(draws) - i - 1)
        print(f"[{i + 1}/{len(draws)}] {key}={row['value'][:40]}: {row['outcome']} ({row['seconds']} s) {row['line'][:120]}; "
              f"ETA {eta / 60:.0f} min", flush=True)
    return rows


def table(rows: list[dict[str, typing.Any]]) -> None:
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("refused", "finished", "slow", "problem")}
    print(f"{len(rows)} values over {len({r['key'] for r in rows})} fields: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for r in rows:
        if r["outcome"] in ("problem", "slow"):
            print(f"- {r['outcome']}: {r['key']}={r['value'][:60]}: {r['line']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-field", type=int, default=1)
    ap.add_argument("--cap-s", type=float, default=600.0)
    ap.add_argument("--out", default="bench/out/config-sweep.jsonl")
    ap.add_argument("--table", default="")
    args = ap.parse_args()
    if args.table:
        table([json.loads(line) for line in Path(args.table).read_text().splitlines()])
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_config("smoke")  # the config itself loads
    sweep(args.seed, args.per_field, cap_s=args.cap_s, out=out)
    table([json.loads(line) for line in out.read_text().splitlines()])


if __name__ == "__main__":
    main()
