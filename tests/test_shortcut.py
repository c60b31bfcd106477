"""Known truth on real data (issue 21): a shortcut planted in every training image of one
MNIST class, explained on a small subset. The report must lead with it, say where it is in
words, and draw its box around the mark on every exemplar; and the same run on the clean
data must state no shortcut check in that corner."""

import numpy as np
import pytest
import torch

from i2x.explanation.document import explain
from i2x.explanation.prototypes import cells_box
from i2x.platform.config_io import load_config
from i2x.reporting.claims import headline, shortcut_checks, statements
from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.training.data import load_data
from i2x.training.loop import train

from .conftest import SHARED_DATASETS

# A small MNIST run (6,000 training images, 2 epochs, 600 analysed). The mark is 4x4 pixels in
# the bottom-right corner: exactly one cell of the CNN's 7x7 grid of 4-pixel cells.
SMALL = {"data.train_limit": 6000, "train.epochs": 2, "data.analysis_size": 600, "data.download": False,
         "data.root": str(SHARED_DATASETS)}
MARK = {"plant.kind": "shortcut", "plant.classes": [7], "plant.rho": 1.0, "plant.size": 4, "plant.corner": "br"}


def _run(tmp_path_factory, name: str, overrides: dict):
    config = load_config("mnist", {"work_dir": str(tmp_path_factory.mktemp(name)), **SMALL, **overrides})
    data = load_data(config.data, config.seed, config.plant)
    result = train(config, data, tmp_path_factory.mktemp(name + "-ckpt"), progress=False)
    files = list_checkpoints(result.folder)
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    analysis, doc = explain(len(files), lambda t: model_from_checkpoint(read_checkpoint(files[t]), str(files[t])), infos, data,
                            config, torch.device("cpu"), target_layer=read_checkpoint(files[-1])["target_layer"], progress=False)
    return data, analysis, doc


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    if not (SHARED_DATASETS / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST is missing under {SHARED_DATASETS} (see shared/datasets/README.md)")
    return _run(tmp_path_factory, "shortcut", MARK)


def test_a_planted_shortcut_leads_the_report_is_located_and_boxed(planted):
    data, analysis, doc = planted
    checks = shortcut_checks(doc)
    assert checks and checks[0]["class"] == "7", [(r["prototype"], r["class"]) for r in checks]
    k = checks[0]["prototype"]
    marks = data.train_marks[data.analysis_idx].numpy()
    marked = np.flatnonzero(marks[:, 0] >= 0)
    mark_cell = analysis.protos.assignment[marked, 6, 6]  # the mark's cell
    assert (mark_cell == k).mean() >= 0.8, np.unique(mark_cell, return_counts=True)  # the lead is the mark's prototype
    assert headline(doc).startswith(f"shortcut check: P{k} -> 7 (bottom-right")
    assert statements(doc)["shortcuts"][0].startswith(f"P{k} drives class 7 from the bottom-right")
    for ex in doc["prototypes"][k]["exemplars"]:
        y0, x0, y1, x1 = marks[ex["sample"]]
        assert y0 >= 0, f"exemplar {ex} of the mark's prototype shows no mark"
        by0, bx0, by1, bx1 = cells_box(analysis.protos.assignment[ex["sample"]], k, (28, 28))
        assert by0 <= y0 and bx0 <= x0 and y1 <= by1 and x1 <= bx1, (ex, (by0, bx0, by1, bx1), (y0, x0, y1, x1))


def test_the_clean_data_has_no_shortcut_check_in_the_marks_corner(tmp_path_factory):
    _, _, doc = _run(tmp_path_factory, "clean", {})
    corner = [r for r in shortcut_checks(doc) if r["class"] == "7" and r["where"]["region"].startswith("bottom-right")]
    assert corner == [], corner
