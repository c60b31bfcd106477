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

# Two pytest workers (pyproject's -n 2), each with torch's default of one thread per core, ask
# a 2-core machine for twice its cores, and the subprocesses tests start inherit the same.
# bench/threads.py: two trainings at once took 18.0 s with 2 threads each and 9.2 s with one
# (the smoke model; MNIST 22.7 s against 16.1 s). So under xdist every worker, and everything it
# starts, runs one torch thread; `-n 0` (one process) keeps torch's default.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
    from i2x.platform.config_io import load_config
    from i2x.training.data import load_data
    from i2x.training.loop import train

    work = tmp_path_factory.mktemp("smoke")
    config = load_config("smoke", {"work_dir": str(work)})
    data = load_data(config.data, config.seed, config.plant)
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
    from i2x.platform.config_io import load_config
    from i2x.training.data import load_data
    from i2x.training.loop import train

    work = tmp_path_factory.mktemp("planted")
    config = load_config("smoke", {"work_dir": str(work), **PLANTED})
    data = load_data(config.data, config.seed, config.plant)
    result = train(config, data, work / "ckpts", progress=False)
    return config, data, result


# A small MNIST run (6,000 training images, 2 epochs, 600 analysed). The mark is 4x4 pixels in
# the bottom-right corner: exactly one cell of the CNN's 7x7 grid of 4-pixel cells; the test
# split is marked in half of every class (plant.test's default), so every group occurs there.
MNIST_SMALL = {"data.train_limit": 6000, "train.epochs": 2, "data.analysis_size": 600, "data.download": False,
               "data.root": str(SHARED_DATASETS)}
MNIST_MARK = {"plant.kind": "shortcut", "plant.classes": [7], "plant.rho": 1.0, "plant.size": 4, "plant.corner": "br"}


def mnist_small_run(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: dict):
    """Train and explain :data:`MNIST_SMALL`: config, data, analysis, document, checkpoints."""
    import torch

    from i2x.explanation.document import explain
    from i2x.platform.config_io import load_config
    from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
    from i2x.training.data import load_data
    from i2x.training.loop import train

    if not (SHARED_DATASETS / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST is missing under {SHARED_DATASETS} (see shared/datasets/README.md)")
    config = load_config("mnist", {"work_dir": str(tmp_path_factory.mktemp(name)), **MNIST_SMALL, **overrides})
    data = load_data(config.data, config.seed, config.plant)
    result = train(config, data, tmp_path_factory.mktemp(name + "-ckpt"), progress=False)
    files = list_checkpoints(result.folder)
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    analysis, doc = explain(len(files), lambda t: model_from_checkpoint(read_checkpoint(files[t]), str(files[t])), infos, data,
                            config, torch.device("cpu"), target_layer=read_checkpoint(files[-1])["target_layer"], progress=False)
    return config, data, analysis, doc, files


@pytest.fixture(scope="session")
def mnist_shortcut(tmp_path_factory: pytest.TempPathFactory):
    """:func:`mnist_small_run` with :data:`MNIST_MARK` planted, once per session."""
    return mnist_small_run(tmp_path_factory, "shortcut", MNIST_MARK)


@pytest.fixture
def browser(tmp_path: Path):
    """Debian's headless Chromium through selenium, 1280x900 (one laptop screen). CI must
    have it (.ci/run installs it); elsewhere the test is skipped, never counted as passed."""
    import shutil

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
