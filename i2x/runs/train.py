"""The train stage run: a tracked, resumable training with checkpoints."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from i2x.platform import tracking
from i2x.platform.config import Config
from i2x.platform.process import scratch_dir
from i2x.runs.runconfig import run_config
from i2x.training.data import DataBundle
from i2x.training.groups import Groups
from i2x.training.loop import resolve_model

TAG_MODEL_URI = "i2x.model_uri"  # the run's MLflow Model, for mlflow.pyfunc.load_model


def train_run(args: argparse.Namespace) -> str:
    """Train with checkpoints, tracked in MLflow; resumes from local checkpoints. Returns the run id."""
    from i2x.reporting.run_figures import plot_training
    from i2x.training.checkpoints import atomic_write_text, list_checkpoints
    from i2x.training.data import load_data
    from i2x.training.groups import groups_of
    from i2x.training.loop import resolve_device, run_folder, train

    asked = run_config(args)
    config = resolve_model(asked)
    if asked.model.name == "auto":
        print(f"i2x: model.name=auto on {resolve_device(config.train.device).type}: {config.model.name} (width {config.model.width})", flush=True)
    data = load_data(config.data, config.seed, config.plant)
    groups = groups_of(config.plant, data.classes, data.test_y.numpy(), None if data.test_marks is None else data.test_marks.numpy())
    folder = run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "runs.json"
    tags = {tracking.TAG_STAGE: "train", tracking.TAG_DATASET: config.data.name, tracking.TAG_MODEL: config.model.name}
    with tracking.open_run(f"train {config.data.name} {config.model.name}", tags, local=folder.resolve()) as run:
        run_id = run.info.run_id
        # read and written under the folder's lock (open_run), atomically: no run id is lost
        previous = json.loads(ledger.read_text()) if ledger.is_file() else []
        atomic_write_text(ledger, json.dumps(previous + [run_id]))  # a dead earlier run was closed by open_run
        tracking.log_params(config.flat())
        tracking.log_text(config.to_yaml(), "config/resolved.yaml")
        existing = list_checkpoints(folder)
        if existing:
            tracking.set_tags({tracking.TAG_RESUMED_FROM: existing[-1].name})
            for path in existing:
                tracking.log_artifact(path, "checkpoints")
        history: list[tuple[int, dict[str, float]]] = []

        def on_metrics(step: int, metrics: dict[str, float]) -> None:
            history.append((step, metrics))
            tracking.log_metrics(metrics, step=step)

        def on_checkpoint(path: Path, _info: object) -> None:
            tracking.log_artifact(path, "checkpoints")

        result = train(config, data, folder, on_metrics=on_metrics, on_checkpoint=on_checkpoint)
        tracking.log_artifact(folder / "index.json", "checkpoints")
        tracking.log_metrics(result.final_metrics)
        from i2x.platform.mlflow_model import log_model
        from i2x.training.batches import to_float

        uri = log_model(result.model, to_float(data.test_x[:4]).numpy(), data.classes, register_as=config.train.register_as)
        tracking.set_tags({TAG_MODEL_URI: uri})
        evaluate_model(config, data, groups, result.model)
        scratch = scratch_dir("train")
        try:
            plot_training(result.checkpoints, history, scratch / "training.png")
            tracking.log_artifact(scratch / "training.png", "report")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        said = (f"test accuracy {result.final_metrics['test_accuracy']:.4f} after {config.train.epochs} epoch(s) of "
                f"{len(data.fit_idx):,} images; {len(result.checkpoints)} checkpoints")
        tracking.set_tags({tracking.TAG_DESCRIPTION: f"Trained {config.data.name} {config.model.name}: {said}. Explain it with "
                                                     f"`i2x explain --run-id {run_id}`. Checkpoints: {folder}."})
        print(f"i2x train: run {run_id} FINISHED, {said} in {folder}")
    return run_id


def evaluate_model(config: Config, data: DataBundle, groups: Groups | None, model: torch.nn.Module, stage: str = "train") -> None:
    """The model on the test split, logged into the active (train or tune) run: per-class
    accuracy (metrics), the confusion matrix (``evaluation/confusion.json`` and a figure), the
    most-confused examples, and, where the data has groups, accuracy per group, worst group
    and the aligned/conflicting gap."""
    from i2x.reporting.evaluation import write_evaluation
    from i2x.training.loop import predictions, resolve_device

    pred = predictions(model, data.test_x, config.train.eval_batch_size, resolve_device(config.train.device)).numpy()
    scratch = scratch_dir("evaluation")
    try:
        metrics, line = write_evaluation(scratch, pred, data.test_y.numpy(), data.test_x.numpy(), data.classes, groups)
        tracking.log_metrics(metrics)
        for path in sorted(scratch.iterdir()):
            tracking.log_artifact(path, "evaluation")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if line:
        print(f"i2x {stage}: {line}", flush=True)
