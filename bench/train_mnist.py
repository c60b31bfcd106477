"""Benchmark: train the default MNIST config on this machine; report wall time and test accuracy.

Goal (issue 2): >= 98.5% test accuracy in <= 10 minutes of training on a 2-core CPU.
No MLflow here: this times the training stage alone.

    python bench/train_mnist.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from i2x.platform.config_io import load_config
from i2x.training.data import load_data
from i2x.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mnist")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--overrides", default="")
    args = parser.parse_args()
    overrides = f"data.root={args.data_dir}" + (f",{args.overrides}" if args.overrides else "")
    config = load_config(args.config, overrides)
    start = time.perf_counter()
    data = load_data(config.data, config.seed, config.plant)
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = train(config, data, Path(folder), progress=False)
    done = time.perf_counter()
    device = "cuda " + torch.cuda.get_device_name(0) if torch.cuda.is_available() and config.train.device != "cpu" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"config={args.config} model={config.model.name} epochs={config.train.epochs} device={device}")
    print(f"data load: {loaded - start:.1f} s; training incl. checkpoint evaluation: {done - loaded:.1f} s ({(done - loaded) / 60:.2f} min)")
    print(f"checkpoints: {[c.step for c in result.checkpoints]}")
    print(f"val accuracy per checkpoint: {[round(c.metrics['val_accuracy'], 4) for c in result.checkpoints]}")
    print(f"test accuracy: {result.final_metrics['test_accuracy']:.4f}  (goal >= 0.985 within 10 min)")


if __name__ == "__main__":
    main()
