import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from i2x.platform.config_io import load_config
from i2x.platform.errors import I2XError
from i2x.training.checkpoints import (
    CHECKPOINT_FORMAT,
    checkpoint_steps,
    list_checkpoints,
    read_checkpoint,
)
from i2x.training.data import load_data
from i2x.training.loop import lr_at, train

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


def test_a_checkpoint_names_no_i2x_module_so_moving_code_never_breaks_old_ones(smoke_run):
    """A checkpoint pickles only torch tensors and plain data: no class or function path of
    i2x (which moved when the modules went into folders, issue 25), so a checkpoint written
    by any earlier layout still loads. The globals are read from the pickle's opcodes."""
    import io
    import pickletools
    import zipfile

    _, _, result = smoke_run
    for path in list_checkpoints(result.folder):
        with zipfile.ZipFile(path) as archive:
            pickle = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        text = io.StringIO()
        pickletools.dis(pickle, out=text)
        globals_ = {line.split("GLOBAL", 1)[1].strip().strip("'").split()[0] for line in text.getvalue().splitlines() if "GLOBAL" in line}
        assert globals_ and globals_ <= {"torch", "torch._utils", "collections"}, globals_


def test_training_is_deterministic(tmp_path):
    config = load_config("smoke", {"train.epochs": "1"})
    data = load_data(config.data, config.seed, config.plant)
    a = train(config, data, tmp_path / "a", progress=False).model.state_dict()
    b = train(config, data, tmp_path / "b", progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_training_line_never_repeats_a_stale_loss(tmp_path, monkeypatch, capsys):
    """Issue 24: between metric logs the line printed the last window's loss and accuracy
    again and again; now each line carries a running mean that moved since the last one."""
    monkeypatch.setenv("I2X_PROGRESS_EVERY", "0")  # a line per step
    monkeypatch.setattr("i2x.platform.progress.is_tty", lambda: False)
    config = load_config("smoke", {"train.epochs": "1", "train.log_every": "1000"})
    data = load_data(config.data, config.seed, config.plant)
    train(config, data, tmp_path / "run")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("i2x train: ") and " step, " in line]
    said = [line.split("elapsed, ")[-1].split("ETA")[-1] for line in lines]
    assert len(lines) >= 10 and all("loss " in s for s in said), lines[:3]
    repeats = sum(a.split(", ", 1)[-1] == b.split(", ", 1)[-1] for a, b in zip(said, said[1:], strict=False))
    assert repeats <= len(said) // 10, (repeats, said[:5])


def test_a_diverging_run_stops_with_one_line_and_publishes_no_nan_checkpoint(tmp_path):
    """train.lr=1e6 used to finish FINISHED with loss NaN and NaN checkpoints."""
    config = load_config("smoke", {"train.epochs": "1", "train.lr": "1e6"})
    data = load_data(config.data, config.seed, config.plant)
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


AIRBENCH = {"model.name": "fastnet", "model.width": "8", "data.augment": "true", "data.translate": "2", "data.flip": "alternating",
            "train.epochs": "2", "train.lr_schedule": "triangle", "train.bias_lr_scale": "64", "train.lookahead_every": "3",
            "train.lookahead_start": "0.2", "train.tta_level": "2", "train.label_smoothing": "0.2"}


def test_airbench_recipe_resumes_bit_identically_mid_lookahead(tmp_path):
    """Killed at the half-epoch checkpoint, after the lookahead started and while its average
    differs from the weights, the run resumes to the same weights as an uninterrupted one:
    the average travels in the checkpoint."""
    config = load_config("smoke", AIRBENCH)
    data = load_data(config.data, config.seed, config.plant)
    full = train(config, data, tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    def kill_at_half(path, info):
        if 0.4 < info.epoch < 1:
            raise Killed

    with pytest.raises(Killed):
        train(config, data, tmp_path / "part", progress=False, on_checkpoint=kill_at_half)
    saved = read_checkpoint(list_checkpoints(tmp_path / "part")[-1])
    assert saved["lookahead"] is not None
    assert any(not torch.equal(saved["lookahead"][k], saved["model"][k]) for k in saved["lookahead"])  # mid-interval
    resumed = train(config, data, tmp_path / "part", progress=False)
    assert resumed.resumed_from == saved["step"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.final_metrics == full.final_metrics and "test_accuracy_tta" in full.final_metrics
    assert full.final_metrics["test_accuracy"] > 0.5  # the recipe learns the smoke task (chance 0.25)


def test_triangle_schedule_has_airbench_shape():
    """airbench94: 0.2x at step 0, the peak at 23% of the steps, 0.07x at the end, linear between."""
    cfg = load_config("smoke", {"train.lr_schedule": "triangle", "train.lr": "2.0"})
    assert lr_at(0, 1000, cfg) == pytest.approx(0.4)
    assert lr_at(230, 1000, cfg) == pytest.approx(2.0)
    assert lr_at(1000, 1000, cfg) == pytest.approx(0.14)
    assert lr_at(115, 1000, cfg) == pytest.approx(1.2)  # half-way up


def test_bias_lr_scale_puts_batchnorm_in_its_own_group():
    from i2x.platform.config import ModelConfig
    from i2x.training.loop import make_optimizer, set_lr
    from i2x.training.models import build_model

    model = build_model(ModelConfig(name="fastnet", width=8), 3, 10)
    config = load_config("smoke", {"train.bias_lr_scale": "64", "train.weight_decay": "0.0128", "train.lr": "0.5"})
    optimizer = make_optimizer(model, config)
    plain, norm = optimizer.param_groups
    bn_shifts = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in norm["params"]} == bn_shifts  # the frozen BatchNorm scales train in neither group
    assert not any(id(p) in bn_shifts for p in plain["params"])
    assert (plain["lr"], norm["lr"]) == (0.5, 32.0)
    assert norm["weight_decay"] * norm["lr"] == pytest.approx(plain["weight_decay"] * plain["lr"])  # the same decay per step
    set_lr(optimizer, 0.1)
    assert (plain["lr"], norm["lr"]) == (0.1, pytest.approx(6.4))


def test_test_time_augmentation_makes_a_lopsided_model_mirror_invariant():
    """A planted model that reads only the left half of the image: with TTA level 1 its logits
    for an image and its mirror image are equal; without TTA they differ. Level 2 adds the
    one-pixel shifts, which leave a constant image unchanged (reflect padding)."""
    from i2x.training.loop import _tta_logits

    class LeftHalf(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[..., : x.shape[-1] // 2].mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)

    model, x = LeftHalf(), torch.rand(4, 3, 8, 8)
    assert not torch.allclose(_tta_logits(model, x, 0), _tta_logits(model, x.flip(-1), 0))
    assert torch.allclose(_tta_logits(model, x, 1), _tta_logits(model, x.flip(-1), 1), atol=1e-6)
    flat = torch.rand(4, 3, 1, 1).expand(4, 3, 8, 8)
    assert torch.allclose(_tta_logits(model, flat, 2), model(flat), atol=1e-6)
    assert not torch.allclose(_tta_logits(model, x, 2), _tta_logits(model, x, 1))  # the shifted views count
