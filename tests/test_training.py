import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from i2x.checkpoints import CHECKPOINT_FORMAT, checkpoint_steps, list_checkpoints, read_checkpoint
from i2x.config import load_config
from i2x.data import load_data
from i2x.errors import I2XError
from i2x.training import lr_at, train

from .conftest import ROOT, cli_env


def test_schedule_is_dense_early_then_every_epoch():
    assert checkpoint_steps(100, 3, (0.1, 0.25, 0.5)) == [10, 25, 50, 100, 200, 300]
    assert checkpoint_steps(7, 1, (0.1, 0.5), every_epoch=False) == [1, 4, 7]  # final step always kept


def test_lr_schedule_is_a_pure_function_of_step():
    cfg = load_config("smoke")
    values = [lr_at(s, 100, cfg) for s in range(100)]
    assert max(values) == pytest.approx(cfg.train.lr, rel=1e-3)
    assert values[0] < values[15] and values[-1] < 0.01 * cfg.train.lr


def test_checkpoints_are_self_describing_and_load_weights_only(smoke_run):
    config, data, result = smoke_run
    files = list_checkpoints(result.folder)
    assert len(files) >= 4 and [int(f.stem.split("-")[1]) for f in files] == [c.step for c in result.checkpoints]
    payload = read_checkpoint(files[-1])  # torch.load(weights_only=True) inside
    assert payload["format"] == CHECKPOINT_FORMAT
    assert {"model", "optimizer", "step", "epoch", "metrics", "config", "data", "target_layer"} <= set(payload)
    assert payload["config"] == config.to_dict()
    assert "val_accuracy" in payload["metrics"]
    index = json.loads((result.folder / "index.json").read_text())
    assert [row["step"] for row in index] == [c.step for c in result.checkpoints]
    assert not [p for p in result.folder.iterdir() if ".tmp" in p.name]  # atomic writes left no temp file
    assert result.final_metrics["test_accuracy"] > 0.9  # the smoke task is learnable


def test_training_is_deterministic(tmp_path):
    config = load_config("smoke", {"train.epochs": "1"})
    data = load_data(config.data, config.seed)
    a = train(config, data, tmp_path / "a", progress=False).model.state_dict()
    b = train(config, data, tmp_path / "b", progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_diverging_run_stops_with_one_line_and_publishes_no_nan_checkpoint(tmp_path):
    """train.lr=1e6 used to finish FINISHED with loss NaN and NaN checkpoints."""
    config = load_config("smoke", {"train.epochs": "1", "train.lr": "1e6"})
    data = load_data(config.data, config.seed)
    with pytest.raises(I2XError, match=r"training diverged at step 4: the weights are not finite; lower train.lr \(now 1e\+06\); checkpoints up to step 2 are kept"):
        train(config, data, tmp_path / "run", progress=False)
    for path in list_checkpoints(tmp_path / "run"):
        weights = read_checkpoint(path)["model"]
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point()), path.name


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "ckpt-00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(I2XError, match="cannot be read"):
        read_checkpoint(bad)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_gives_identical_weights(tmp_path):
    overrides = "data.synthetic_per_class=600,model.width=16,train.epochs=3,train.log_every=50"

    def command(work):
        return [sys.executable, "-m", "i2x.cli", "train", "--config", "smoke", "--overrides", f"{overrides},work_dir={work}"]

    env = cli_env(tmp_path)
    reference = subprocess.run(command(tmp_path / "ref"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    (ref_folder,) = (tmp_path / "ref").glob("train-*")  # beside it: the folder lock
    ref_files = list_checkpoints(ref_folder)

    proc = subprocess.Popen(command(tmp_path / "killed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        folders = list((tmp_path / "killed").glob("train-*"))
        if folders and len(list_checkpoints(folders[0])) >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (folder,) = (tmp_path / "killed").glob("train-*")
    survived = list_checkpoints(folder)
    assert 2 <= len(survived) < len(ref_files), "the kill must land between checkpoints"

    resumed = subprocess.run(command(tmp_path / "killed"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    files = list_checkpoints(folder)
    assert [f.name for f in files] == [f.name for f in ref_files]
    final, ref = read_checkpoint(files[-1])["model"], read_checkpoint(ref_files[-1])["model"]
    assert all(torch.equal(final[k], ref[k]) for k in ref)

    import mlflow
    from mlflow.tracking import MlflowClient
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = {r.info.run_id: r for r in MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])}
    ledger = json.loads((folder / "runs.json").read_text())
    killed_id, resumed_id = ledger
    assert runs[killed_id].info.status == "KILLED"
    assert runs[resumed_id].info.status == "FINISHED"
    assert runs[resumed_id].data.tags["i2x.resumed_from_step"] == survived[-1].name
    assert ROOT.exists()
