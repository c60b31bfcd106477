"""Benchmark: CIFAR-10 training with ``configs/cifar10.yaml`` on this machine; test accuracy
against wall time per epoch, and the ResNet-18 estimate beside it.

Goal (issue 14): >= 90% CIFAR-10 test accuracy in <= 25 minutes of training on a 2-core
CPU, nothing else running. No MLflow: this times the training stage alone. Wall times are
the training loop's own (checkpoint writes included); each epoch's checkpoint is scored on
the test set after training, outside the timed part.

    python bench/cifar_fast.py                       # the config as shipped (model.name=auto)
    python bench/cifar_fast.py --overrides train.epochs=8,model.name=fastnet,model.width=32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from i2x.platform.config_io import load_config
from i2x.runs.plan import estimate
from i2x.training.checkpoints import model_from_checkpoint, read_checkpoint, steps_per_epoch
from i2x.training.data import load_data
from i2x.training.loop import evaluate, resolve_device, resolve_model, train


def step_seconds(config, data, device: torch.device, name: str) -> float:
    """Seconds per training step of model ``name`` at ``train.batch_size``: the plan's timed warm-up."""
    from dataclasses import replace

    return estimate(replace(config, model=replace(config.model, name=name)), data, device, repeats=3).step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--overrides", default="")
    parser.add_argument("--skip-resnet", action="store_true", help="do not time ResNet-18 steps")
    args = parser.parse_args()
    overrides = f"data.root={args.data_dir}" + (f",{args.overrides}" if args.overrides else "")
    config = resolve_model(load_config(args.config, overrides))
    device = resolve_device(config.train.device)
    data = load_data(config.data, config.seed, config.plant)
    spe = steps_per_epoch(len(data.fit_idx), config.train.batch_size)
    print(f"{config.data.name}: {len(data.fit_idx)} training images, {config.model.name} width {config.model.width}, "
          f"{config.train.epochs} epochs x {spe} steps of {config.train.batch_size}, device {device.type}, "
          f"{torch.get_num_threads()} threads", flush=True)
    stamps: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        result = train(config, data, Path(folder), progress=False,
                       on_checkpoint=lambda path, info: stamps.__setitem__(info.step, time.perf_counter() - t0))
        wall = time.perf_counter() - t0
        tta = config.train.tta_level
        print(f"| epoch | wall (s) | val acc | test acc | test acc, TTA level {tta} |\n|---|---|---|---|---|")
        for info in result.checkpoints:
            if info.step % spe:
                continue
            model = model_from_checkpoint(read_checkpoint(Path(folder) / info.file), info.file).to(device)
            test = evaluate(model, data.test_x, data.test_y, config.train.eval_batch_size, device)["accuracy"]
            test_tta = evaluate(model, data.test_x, data.test_y, config.train.eval_batch_size, device, tta)["accuracy"] if tta else float("nan")
            print(f"| {info.epoch:.0f} | {stamps[info.step]:.1f} | {info.metrics['val_accuracy']:.4f} | {test:.4f} | {test_tta:.4f} |", flush=True)
    final = result.final_metrics
    goal, limit = (0.94, 60) if device.type == "cuda" else (0.90, 1500)
    best = max(final["test_accuracy"], final.get("test_accuracy_tta", 0.0))
    print(f"trained in {wall:.1f} s ({wall / 60:.1f} min), test accuracy {final['test_accuracy']:.4f}"
          + (f" ({final['test_accuracy_tta']:.4f} with TTA)" if "test_accuracy_tta" in final else "")
          + f"; goal >= {goal} in <= {limit} s on {device.type}: {'met' if best >= goal and wall <= limit else 'NOT met'}")
    if not args.skip_resnet:
        per_step = step_seconds(config, data, device, "resnet18")
        fast = step_seconds(config, data, device, config.model.name)
        print(f"ResNet-18 at batch {config.train.batch_size}: {per_step:.3f} s/step -> {per_step * spe:.1f} s/epoch "
              f"(estimate; {config.model.name}: {fast:.3f} s/step, {per_step / fast:.1f}x faster)")


if __name__ == "__main__":
    main()
