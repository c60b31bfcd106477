"""The explanation engine end to end on the smoke run: schema, determinism, faithfulness."""

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from i2x.explanation.document import TIMESTAMP_FIELDS, dumps, explain, validate
from i2x.platform.config_io import apply_overrides
from i2x.platform.errors import I2XError
from i2x.reporting.claims import named_prototypes, prototype_names, shortcut_checks
from i2x.reporting.statements import statements
from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.training.synthetic import make_synthetic

from .conftest import PLANTED


def _explain(run):
    config, data, result = run
    files = list_checkpoints(result.folder)
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    analysis, doc = explain(len(files), lambda t: model_from_checkpoint(read_checkpoint(files[t]), str(files[t])), infos, data,
                            config, torch.device("cpu"), target_layer="net.block3", progress=False)
    assert doc["run"] == {"train_run_id": None, "dataset": "synthetic", "model": "cnn", "target_layer": "net.block3", "grid": [8, 8],
                          "image_size": [32, 32], "method": "gradcam"}
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
    # uncertain lists every candidate with its two checks; n_uncertain counts those that beat the null
    assert doc["metrics"]["n_uncertain_candidates"] == len(doc["uncertain"])
    assert doc["metrics"]["n_uncertain"] == sum(1 for u in doc["uncertain"] if u["beats_null"])
    threshold = doc["config"]["explain"]["uncertain_threshold"]
    assert all(s["score"] >= threshold for s in doc["uncertain"])
    tested = {(r["role"], r["prototype"]) for r in doc["faithfulness"]["deletion"]}
    assert all(("uncertain", u["prototype"]) in tested for u in doc["uncertain"])
    explain_cfg = doc["config"]["explain"]  # the adaptive null starts at null_permutations and doubles, up to the cap
    assert explain_cfg["null_permutations"] <= doc["null"]["n_permutations"] <= explain_cfg["null_max_permutations"]


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


def test_the_null_seed_moves_the_null_and_nothing_before_it(smoke_run, explained):
    """explain.null_seed (bench/null_seeds.py): -1 is the run's seed; another seed draws other
    permutations, while the prototypes, groups and fits stay those of the run's seed."""
    config, data, result = smoke_run
    _, base = explained
    _, same = _explain((apply_overrides(config, {"explain.null_seed": config.seed}), data, result))
    _, other = _explain((apply_overrides(config, {"explain.null_seed": config.seed + 1}), data, result))
    assert same["null"] == base["null"]
    assert [t["null_mean"] for t in other["null"]["tests"]] != [t["null_mean"] for t in base["null"]["tests"]]
    assert [t["statistic"] for t in other["null"]["tests"]] == [t["statistic"] for t in base["null"]["tests"]]
    for key in ("prototypes", "scores", "intervals", "regression"):
        assert other[key] == base[key], key


@pytest.fixture(scope="module")
def planted(planted_run):
    return _explain(planted_run)


def _mark_cells(config, data, analysis) -> np.ndarray:
    """``(N, h, w)`` bool: grid cells on (or next to) the planted mark of each analysis image."""
    _, _, boxes = make_synthetic(config.data.synthetic_per_class, seed=1, size=32)
    boxes = boxes[data.analysis_idx, 0].numpy()
    a = analysis.protos.assignment
    cell = 32 // a.shape[1]
    on_mark = np.zeros_like(a, dtype=bool)
    for i in np.flatnonzero(boxes[:, 0] >= 0):
        y0, x0, y1, x1 = boxes[i]
        on_mark[i, max(0, y0 // cell - 1) : (y1 - 1) // cell + 2, max(0, x0 // cell - 1) : (x1 - 1) // cell + 2] = True
    return on_mark


def test_the_planted_mark_is_named_verified_and_located(planted_run, planted):
    """Ground truth we control: ``bar+mark`` differs from ``bar`` only by a ring mark planted
    in the top-left 12x12 pixels (see ``i2x.training.synthetic.make_synthetic``). The explanation must
    (a) label as shared by ``bar+mark`` a prototype that sits on the mark -- most of its
    locations in ``bar+mark`` images are the mark's cells -- and is rare in ``bar``;
    (b) verify it causally: occluding it hurts ``bar+mark`` more than matched random cells;
    (c) show exemplars that contain the mark; (d) say in words where it sits."""
    config, data, _ = planted_run
    analysis, doc = planted
    marked, plain = data.classes.index("bar+mark"), data.classes.index("bar")
    labels = data.train_y[data.analysis_idx].numpy()
    a = analysis.protos.assignment
    on_mark = _mark_cells(config, data, analysis)
    rows = {row["prototype"]: row for row in doc["class_structure"][marked]["shared"]}
    found = [k for k in rows
             if on_mark[labels == marked][a[labels == marked] == k].mean() >= 0.6 and analysis.protos.coverage[k, plain] <= 0.2]
    assert found, f"no shared prototype of bar+mark sits on the mark; shared: {rows}"
    k = found[0]
    assert rows[k]["verified"] is True, rows[k]
    deletion = next(r for r in doc["faithfulness"]["deletion"] if r["prototype"] == k and r["role"] == "shared")
    assert deletion["ci"][0] > 0 and deletion["effect"] > deletion["baselines"]["foreground"]
    for ex in doc["prototypes"][k]["exemplars"]:
        r, c = ex["cell"]
        assert on_mark[ex["sample"], r, c], f"exemplar {ex} of P{k} is not on the mark"
    said = statements(doc)
    assert any(s.startswith(f"P{k} sits in the top-left") for s in said["locations"]), said["locations"]
    assert any("relies on" in s and f"P{k}" in s and "bar+mark" in s for s in said["classes"]), said["classes"]
    # prototypes in exactly the same images are one column of the fits: they occur together,
    # every class labels all of them or none, and the report names each group it states
    present = analysis.protos.presence
    for group in doc["aliases"]:
        assert all(np.array_equal(present[:, group[0]], present[:, j]) for j in group)
        for cls in doc["class_structure"]:
            ids = {r["prototype"] for r in cls["shared"]}
            assert ids.isdisjoint(group) or ids >= set(group), (group, ids)
        if k in group:
            assert any(s.startswith(f"{prototype_names(group)} occur in exactly the same images") for s in said["classes"])


@pytest.fixture(scope="module")
def confuser_run(tmp_path_factory):
    """The planted set with a confuser in 30% of ``column`` and of ``diagonal`` images."""
    from i2x.platform.config_io import load_config
    from i2x.training.data import load_data
    from i2x.training.loop import train

    work = tmp_path_factory.mktemp("confuser")
    config = load_config("smoke", {"work_dir": str(work), **PLANTED, "data.synthetic_confuser": 0.3})
    data = load_data(config.data, config.seed, config.plant)
    return config, data, train(config, data, work / "ckpts", progress=False)


def test_the_planted_confuser_is_uncertain_between_its_pair_and_verified(confuser_run):
    """Ground truth: in 30% of the ``column`` and of the ``diagonal`` images the shape is
    replaced by the same 4x4 square (see ``i2x.training.synthetic.make_synthetic``), so the model cannot
    tell those images apart and its pull through the square swings between the two classes.
    The prototype that sits on the square must be flagged uncertain between exactly
    {column, diagonal}, beat the permutation null, and be verified causally (occluding it
    moves the pair margin more than matched random cells)."""
    config, data, _ = confuser_run
    analysis, doc = _explain(confuser_run)
    _, _, boxes = make_synthetic(config.data.synthetic_per_class, seed=1, size=32, confuser=config.data.synthetic_confuser)
    boxes = boxes[data.analysis_idx, 1].numpy()
    a = analysis.protos.assignment
    cell = 32 // a.shape[1]
    planted = np.flatnonzero(boxes[:, 0] >= 0)
    on = np.zeros_like(a, dtype=bool)
    for i in planted:
        y0, x0, y1, x1 = boxes[i]
        on[i, max(0, y0 // cell - 1) : (y1 - 1) // cell + 2, max(0, x0 // cell - 1) : (x1 - 1) // cell + 2] = True
    sits = [k for k in range(a.max() + 1) if (a[planted] == k).any() and on[planted][a[planted] == k].mean() >= 0.8]
    assert sits, "no prototype sits on the confuser"
    pair = {"column", "diagonal"}
    rows = {row["prototype"]: row for row in doc["uncertain"] if set(row["pair"]) == pair}
    found = [k for k in sits if k in rows and rows[k]["beats_null"] and rows[k]["verified"]]
    assert found, f"the confuser's prototypes {sits} are not stated uncertain between {pair}: {doc['uncertain']}"
    named = named_prototypes(doc)
    assert any(r["role"] == "uncertain" and r["prototype"] in found for r in named["findings"]), named["findings"]


@pytest.fixture(scope="module")
def permuted_run(planted_run):
    """The planted set with its training labels permuted, trained the same way."""
    config, data, _ = planted_run
    gen = torch.Generator().manual_seed(3)
    shuffled = dataclasses.replace(data, train_y=data.train_y[torch.randperm(len(data.train_y), generator=gen)])
    from i2x.training.loop import train

    return config, shuffled, train(config, shuffled, Path(config.work_dir) / "permuted", progress=False)


@pytest.mark.parametrize("background_rule", [True, False])
def test_a_model_trained_on_permuted_labels_has_no_finding(permuted_run, background_rule):
    """Ground truth: with the training labels permuted there is nothing to explain. No
    prototype may pass both the permutation null and the causal check as a class's shared
    prototype. Without the background rule, candidate labels do appear (canvas prototypes
    cover 80% of every class), so the null and the causal check must be what rejects them."""
    config, data, result = permuted_run
    if not background_rule:
        config = dataclasses.replace(config, explain=dataclasses.replace(config.explain, background_class_share=1.01))
    _, doc = _explain((config, data, result))
    named = named_prototypes(doc)
    assert not [r for r in named["findings"] if r["role"] == "shared"], named["findings"]
    assert shortcut_checks(doc) == []  # no cue pushes a class that the labels never followed
    if not background_rule:
        assert any(row["shared"] for row in doc["class_structure"])
