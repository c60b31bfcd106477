import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT, cli_env


def run_cli(tmp_path, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "i2x.cli", *args], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def _tree(root: Path, counts: dict[str, int]) -> Path:
    """An ImageFolder tree: ``counts[c]`` random 16-pixel images per class and split."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_help_lists_the_stages(tmp_path):
    out = run_cli(tmp_path, "--help")
    assert out.returncode == 0
    for sub in ("train", "explain", "tune", "report", "services", "main"):
        assert sub in out.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["train", "--config", "smoke", "--overrides", "model.name=vgg"], "unknown model 'vgg'"),
        (["train", "--config", "smoke", "--overrides", "train.epochz=1"], "unknown config key 'train.epochz'"),
        (["train", "--config", "nope"], "config 'nope' not found"),
        (["tune"], "--run-id EXPLAIN_RUN_ID"),
        (["train", "--config", "smoke", "--overrides", "tune.storage=postgresql://ana:pw-1234@db/i2x"], "holds a password"),
        (["tune", "--worker", "--study", "s", "--storage", "postgresql://ana:pw-1234@db/i2x"], "holds a password"),
        (["report", "--run-id", "abc", "--out", "A_FILE"], "is a file; give a folder"),
        (["train", "--config", "smoke", "--overrides", "train.batch_size=0"], "'train.batch_size' in overrides must be at least 1, got 0"),
        (["train", "--config", "smoke", "--overrides", "train.epochs=0"], "'train.epochs' in overrides must be at least 1, got 0"),
        (["train", "--config", "smoke", "--overrides", "data.image_size=-5"], "'data.image_size' in overrides must be from 0 to 4096"),
        (["train", "--config", "smoke", "--seed", "99999999999999999999"], "'seed' in overrides must be from 0 to 4294967295"),
        (["train", "--config", "BAD_YAML"], "is not valid YAML at line 3, column 1"),
        (["train", "--dataset", "mnist", "--data-dir", "RANDOM_IDX", "--overrides", "data.download=false"], "are not valid (AssertionError"),
        (["train", "--dataset", "imagefolder", "--data-dir", "HUGE_PNG"], "is too large to decode safely (Image size (225000000 pixels)"),
        (["train", "--dataset", "imagefolder", "--data-dir", "NON_UTF8"], "class folder b'caf\\xe9' under"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    (tmp_path / "A_FILE").write_text("keep me")
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: [1\n")
    made = {"BAD_YAML": tmp_path / "bad.yaml"}
    if "RANDOM_IDX" in args:  # bytes where MNIST's IDX files should be (torchvision asserted)
        raw = tmp_path / "idx" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            (raw / name).write_bytes(bytes(range(256)) * 20)
        made["RANDOM_IDX"] = tmp_path / "idx"
    if "HUGE_PNG" in args:  # PIL's decompression-bomb guard (was a traceback)
        made["HUGE_PNG"] = _tree(tmp_path / "huge", {"a": 2, "b": 2})
        Image.new("L", (15000, 15000)).save(made["HUGE_PNG"] / "train" / "a" / "huge.png")
    if "NON_UTF8" in args:  # a folder name no JSON or MLflow tag can hold (was a UnicodeEncodeError)
        made["NON_UTF8"] = _tree(tmp_path / "nu", {"plain": 2})
        for split in ("train", "test"):
            os.makedirs(os.path.join(os.fsencode(made["NON_UTF8"] / split), b"caf\xe9"))
    out = run_cli(tmp_path, *[str(made.get(a, a)) for a in args])
    assert "pw-1234" not in out.stdout + out.stderr
    assert (tmp_path / "A_FILE").read_text() == "keep me"
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("i2x: error: ") and fragment in lines[-1]
    assert "Traceback" not in out.stderr
    if (tmp_path / "mlflow.db").exists():  # a config error opens no MLflow run
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.slow
def test_mlflow_run_train_entry_point_smoke(tmp_path):
    env = cli_env(tmp_path, I2X_CONFIG_DIR=str(ROOT / "configs"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "train", "-P", "config=smoke",
         "-P", f"overrides=work_dir={tmp_path / 'work'}", "--env-manager", "local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    ckpts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert len([p for p in ckpts if p.endswith(".pt")]) >= 4
    assert "checkpoints/index.json" in ckpts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "config")] == ["config/resolved.yaml"]
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 3
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 4
    tags = run.data.tags
    assert tags["i2x.dataset"] == "synthetic" and tags["i2x.model"] == "cnn" and "mlflow.source.git.commit" in tags
    assert run.data.params["train.epochs"] == "2"


def test_a_locked_tracking_store_is_one_line(tmp_path):
    """Another process holding the SQLite store (an exclusive transaction) used to end in a
    SQLAlchemy traceback; i2x says which store and what to do, exit 2."""
    import sqlite3

    import mlflow

    db = tmp_path / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = run_cli(tmp_path, "train", "--config", "smoke")
    finally:
        holder.close()
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"i2x: error: the tracking store sqlite:///{db} cannot be used (") and "database is locked" in lines[-1]
    assert "Traceback" not in out.stderr
