"""Shared fixtures: seeds, a temporary MLflow store, and one tiny trained run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private sqlite tracking store for one test."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    """The smoke config trained once (a few seconds): config, data, folder of checkpoints."""
    from i2x.config import load_config
    from i2x.data import load_data
    from i2x.training import train

    work = tmp_path_factory.mktemp("smoke")
    config = load_config("smoke", {"work_dir": str(work)})
    data = load_data(config.data, config.seed)
    result = train(config, data, work / "ckpts", progress=False)
    return config, data, result


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess of the CLI with a private store and work dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "I2X_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    })
    env.update(extra)
    return env


# The synthetic set at a size where its planted mark is learned with a history to read:
# 300 images per class, faint to bright marks, 3 epochs (about 10 s on 2 cores).
PLANTED = {"data.synthetic_per_class": 300, "data.analysis_size": 800, "train.epochs": 3}


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory: pytest.TempPathFactory):
    """The smoke config at :data:`PLANTED` size, trained once: config, data, result."""
    from i2x.config import load_config
    from i2x.data import load_data
    from i2x.training import train

    work = tmp_path_factory.mktemp("planted")
    config = load_config("smoke", {"work_dir": str(work), **PLANTED})
    data = load_data(config.data, config.seed)
    result = train(config, data, work / "ckpts", progress=False)
    return config, data, result
