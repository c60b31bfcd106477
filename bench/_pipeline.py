"""Shared by the MLflow-free experiment scripts: load, train, explain, all in-process."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from i2x.explanation.analysis import Analysis
from i2x.explanation.document import explain
from i2x.platform.config import Config
from i2x.platform.config_io import load_config
from i2x.training.checkpoints import model_from_checkpoint, read_checkpoint
from i2x.training.data import DataBundle, load_data
from i2x.training.loop import TrainResult, resolve_device, train


@dataclass
class Explained:
    config: Config
    data: DataBundle
    result: TrainResult
    payloads: list[dict[str, Any]]
    analysis: Analysis
    doc: dict[str, Any]
    infos: list[dict[str, Any]]
    device: torch.device
    times: dict[str, float]


def _stage(name: str, times: dict[str, float], extra: str = "") -> None:
    """One line as each stage ends, so a run stopped by a time limit still tells its stage times."""
    print(f"stage {name}: {times[name]:.1f} s" + (f"; {extra}" if extra else ""), flush=True)


def train_and_explain(config_name: str, data_dir: str, overrides: str) -> Explained:
    """Resolve the config, load the data, train to a temp folder, run the I2X analysis."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    extra = f",{overrides}" if overrides else ""
    config = load_config(config_name, f"data.root={data_dir}{extra}")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_data(config.data, config.seed, config.plant)
    times["data"] = time.perf_counter() - t0
    _stage("data", times)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        result = train(config, data, Path(folder), progress=False)
        times["train"] = time.perf_counter() - t0
        _stage("train", times, f"test accuracy {result.final_metrics['test_accuracy']:.4f}")
        files = sorted(Path(folder).glob("ckpt-*.pt"))
        payloads = [read_checkpoint(f) for f in files]
    device = resolve_device(config.train.device)
    t0 = time.perf_counter()
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    analysis, doc = explain(len(files), lambda t: model_from_checkpoint(payloads[t], str(files[t])), infos, data, config, device,
                            target_layer=payloads[-1]["target_layer"], progress=False)
    times["explain"] = time.perf_counter() - t0
    _stage("explain", times)
    return Explained(config, data, result, payloads, analysis, doc, infos, device, times)
