"""The explanation engine end to end on the smoke run: schema, determinism, faithfulness."""

import copy
import json

import numpy as np
import pytest
import torch

from i2x.analysis import analyse
from i2x.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.data import make_synthetic
from i2x.errors import I2XError
from i2x.explanation import TIMESTAMP_FIELDS, build_document, dumps, validate


def _explain(smoke_run):
    config, data, result = smoke_run
    files = list_checkpoints(result.folder)
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    analysis = analyse(len(files), lambda t: model_from_checkpoint(read_checkpoint(files[t]), str(files[t])),
                       images, labels, data.num_classes, config.explain, config.seed, torch.device("cpu"), progress=False)
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    doc = build_document(
        run={"train_run_id": None, "dataset": "synthetic", "model": "cnn", "target_layer": "net.block3", "grid": [8, 8],
             "image_size": [32, 32], "method": "gradcam"},
        config=config.to_dict(), classes=list(data.classes), checkpoints=infos, protos=analysis.protos,
        analysis_index=data.analysis_idx.numpy(), groups=analysis.groups, fits=analysis.fits,
        structure=analysis.structure, labels=labels.numpy(),
    )
    return analysis, doc


@pytest.fixture(scope="module")
def explained(smoke_run):
    return _explain(smoke_run)


def test_document_validates_and_has_every_section(explained):
    analysis, doc = explained
    validate(doc)
    t = len(doc["checkpoints"])
    assert analysis.maps.shape[:2] == (t, 300) and analysis.probs.shape == (t, 300, 4)
    assert analysis.intensities.p.shape == (t, 300, 8)
    assert len(doc["prototypes"]) == 8 and len(doc["intervals"]) == t - 1
    assert len(doc["progression"]) == 6  # 4 classes -> 6 pairs
    assert len(doc["scores"]) == 8
    assert doc["metrics"]["n_uncertain"] == len(doc["uncertain"])
    assert all(s["score"] >= 0.3 for s in doc["uncertain"])


def test_schema_rejects_a_broken_document(explained):
    _, doc = explained
    broken = copy.deepcopy(doc)
    broken["uncertain"].append({"prototype": 1, "pair": ["a"], "score": 2.0, "oscillation": 0, "share": 0, "d": []})
    with pytest.raises(I2XError, match="does not match schema"):
        validate(broken)
    missing = copy.deepcopy(doc)
    del missing["progression"]
    with pytest.raises(I2XError, match="'progression' is a required property"):
        validate(missing)


def test_same_seed_same_bytes(smoke_run, explained):
    _, first = explained
    _, second = _explain(smoke_run)
    for doc in (first, second):
        for key in TIMESTAMP_FIELDS:
            doc.pop(key)
    assert dumps(first) == dumps(second)
    json.loads(dumps(first))


def test_faithfulness_finds_the_planted_mark(smoke_run, explained):
    """Ground truth we control: in the synthetic set, ``bar+mark`` differs from ``bar``
    only by a small ring mark planted in the top-left 12x12 pixels (see
    ``i2x.data.make_synthetic``). A faithful explanation must find it: among the shared
    prototypes of ``bar+mark`` with positive evidence there must be one that (a) sits on
    the mark -- most of its locations in ``bar+mark`` images are grid cells covering the
    mark's pixels -- and (b) is particular to that class (rare in ``bar``). A prototype of
    the bar or the background would fail (a); one that looks at the mark region only by
    chance would fail (b)."""
    config, data, _ = smoke_run
    analysis, doc = explained
    marked = data.classes.index("bar+mark")
    plain = data.classes.index("bar")
    _, _, boxes = make_synthetic(config.data.synthetic_per_class, seed=1, size=32)
    boxes = boxes[data.analysis_idx].numpy()
    labels = data.train_y[data.analysis_idx].numpy()
    a = analysis.protos.assignment
    h = a.shape[1]
    cell = 32 // h
    on_mark = np.zeros_like(a, dtype=bool)
    for i in np.flatnonzero(labels == marked):
        y0, x0, y1, x1 = boxes[i]
        r0, r1 = max(0, y0 // cell - 1), (y1 - 1) // cell + 2
        c0, c1 = max(0, x0 // cell - 1), (x1 - 1) // cell + 2
        on_mark[i, r0:r1, c0:c1] = True

    shared = {row["prototype"]: row for row in doc["class_structure"][marked]["shared"]}
    found = []
    for k, row in shared.items():
        in_marked = a[labels == marked] == k
        share_on_mark = on_mark[labels == marked][in_marked].mean() if in_marked.any() else 0.0
        if row["evidence"] > 0 and share_on_mark >= 0.6 and analysis.protos.coverage[k, plain] <= 0.2:
            found.append(k)
    assert found, f"no shared prototype of bar+mark sits on the mark; shared: {shared}"
