"""`i2x doctor` against every store kind, missing, damaged or down (issue 44): what it prints and
its exit code, and that it created nothing. Prints the Markdown table of docs/interruptions.md.

    python bench/doctor_faults.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "I2X_", "AWS_"))}
    env.update(PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", **extra)
    return env


def _store(tmp: Path) -> str:
    import mlflow

    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def _s3_run(tmp: Path) -> str:
    """A FINISHED i2x run whose artifacts live in an S3 bucket whose endpoint does not answer."""
    import mlflow

    uri = _store(tmp)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("s3", artifact_location="s3://i2x-bucket/mlflow")
    run = client.create_run(experiment, tags={"i2x.holder": "host 1 1", "i2x.stage": "train"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def _case(name: str, setup: Callable[[Path], tuple[dict[str, str], list[str]]]) -> tuple[str, int, str, bool]:
    with tempfile.TemporaryDirectory(prefix="i2x-doctor-") as tmp:
        tmp_path = Path(tmp)
        env_extra, args = setup(tmp_path)
        before = sorted(p.name for p in tmp_path.rglob("*"))
        out = subprocess.run([sys.executable, "-m", "i2x.cli", "doctor", *args], cwd=tmp_path, env=_env(tmp_path, **env_extra),
                             capture_output=True, text=True, timeout=300)
        after = sorted(p.name for p in tmp_path.rglob("*"))
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip() and " INFO " not in line]
        said = next((line for line in lines if line.startswith(("i2x: error", "VIOLATION", "cannot tell"))), lines[-1] if lines else "")
        traceback = "Traceback" in out.stderr
        return name, out.returncode, ("TRACEBACK " if traceback else "") + said.replace(str(tmp_path), "<tmp>"), before == after


CASES: list[tuple[str, Callable[[Path], tuple[dict[str, str], list[str]]]]] = [
    ("SQLite tracking store, healthy and empty", lambda t: ({"MLFLOW_TRACKING_URI": _store(t)}, [])),
    ("SQLite tracking store, missing", lambda t: ({"MLFLOW_TRACKING_URI": f"sqlite:///{t}/gone/mlflow.db"}, [])),
    ("SQLite tracking store, a text file", lambda t: ((t / "notes.db").write_text("notes\n") and {}) or
     ({"MLFLOW_TRACKING_URI": f"sqlite:///{t}/notes.db"}, [])),
    ("SQLite tracking store, a directory", lambda t: ((t / "dir.db").mkdir() or {}) and {} or ({"MLFLOW_TRACKING_URI": f"sqlite:///{t}/dir.db"}, [])),
    ("PostgreSQL tracking store, server refuses", lambda t: ({"MLFLOW_TRACKING_URI": "postgresql://127.0.0.1:1/i2x"}, [])),
    ("MLflow tracking server, down", lambda t: ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}, [])),
    ("tracking URI of an unknown scheme", lambda t: ({"MLFLOW_TRACKING_URI": "foo://bar"}, [])),
    ("S3 artifact store, endpoint down", lambda t: ({"MLFLOW_TRACKING_URI": _s3_run(t), "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:1",
                                                     "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}, [])),
    ("Optuna storage (SQLite), missing", lambda t: ({"MLFLOW_TRACKING_URI": _store(t)}, ["--storage", f"sqlite:///{t}/optuna.db"])),
    ("Optuna storage (SQLite), a text file", lambda t: ((t / "o.db").write_text("x\n") and {}) or
     ({"MLFLOW_TRACKING_URI": _store(t)}, ["--storage", f"sqlite:///{t}/o.db"])),
    ("Optuna storage (PostgreSQL), server refuses", lambda t: ({"MLFLOW_TRACKING_URI": _store(t)}, ["--storage", "postgresql://127.0.0.1:1/o"])),
    ("Optuna storage (journal), missing", lambda t: ({"MLFLOW_TRACKING_URI": _store(t)}, ["--storage", f"journal:{t}/j.log"])),
    ("work folder, missing", lambda t: ({"MLFLOW_TRACKING_URI": _store(t)}, ["--work", f"{t}/i2x-wrok"])),
]


def main() -> None:
    print("| store | condition | doctor says | exit | created nothing |\n|---|---|---|---|---|")
    for name, setup in CASES:
        case, code, said, same = _case(name, setup)
        store, _, condition = case.partition(", ")
        print(f"| {store} | {condition or '-'} | {said[:160].replace('|', '/')} | {code} | {'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
