"""Planted defects (issue 21): the mark lands where and how often the config says, on any
data set, and nothing else of the bundle moves."""

import pytest
import torch

from i2x.platform.config import PlantConfig
from i2x.platform.config_io import load_config
from i2x.platform.errors import I2XError
from i2x.training.data import load_data
from i2x.training.plants import apply_plant, check_plant, stamp


def _blank(n_per_class: int, classes: int, channels: int = 1, size: int = 12):
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return torch.zeros(len(y), channels, size, size, dtype=torch.uint8), y


def test_a_shortcut_marks_exactly_rho_of_its_class_and_other_of_the_rest():
    x, y = _blank(20, 3)
    cfg = PlantConfig(kind="shortcut", classes=(1,), rho=0.75, other=0.1, test=0.5, size=3, color=(200,), corner="tl")
    tx, ty = _blank(10, 3)
    px, ptx, boxes, test_boxes = apply_plant(cfg, 0, x, y, tx, ty)
    marked = boxes[:, 0] >= 0
    assert [int(marked[y == c].sum()) for c in range(3)] == [2, 15, 2]  # 10% of 20, 75% of 20, 10% of 20
    assert [int((test_boxes[:, 0] >= 0)[ty == c].sum()) for c in range(3)] == [5, 5, 5]  # test: 50% of every class
    assert torch.equal(boxes[marked][0], torch.tensor([0, 0, 3, 3]))  # fixed, top-left, 3 pixels
    assert int(px[marked][:, :, :3, :3].min()) == 200 and int(px[marked][:, :, 3:, :].max()) == 0 == int(px[marked][:, :, :, 3:].max())
    assert int(px[~marked].max()) == 0  # unmarked images untouched
    assert int(x.max()) == 0  # the inputs are not changed in place


def test_random_position_stays_inside_the_corner_region_and_the_mark_kinds_cover_as_drawn():
    x, y = _blank(50, 2, channels=3, size=16)
    cfg = PlantConfig(kind="shortcut", classes=(0,), rho=1.0, test=0.0, size=3, position="random", corner="br", region=6,
                      color=(255, 0, 0))
    px, _, boxes, _ = apply_plant(cfg, 1, x, y, x[:2], y[:2])
    on = boxes[boxes[:, 0] >= 0]
    assert len(on) == 50 and int(on[:, :2].min()) >= 10 and int(on[:, 2:].max()) <= 16
    assert len({tuple(b.tolist()) for b in on}) > 5  # positions vary
    assert int(px[:, 1:].max()) == 0 and int(px[:, 0].max()) == 255  # red only
    _, ring = stamp(PlantConfig(mark="ring", size=5), 1)
    assert ring.sum() == 16 and not ring[1:4, 1:4].any()
    _, stripes = stamp(PlantConfig(mark="stripes", size=4), 1)
    assert stripes.tolist() == [[True] * 4, [False] * 4, [True] * 4, [False] * 4]


def test_the_cues_of_issue_41_land_as_declared():
    """Shortcuts as they occur: a patch that moves and varies in intensity with noise, a small
    3x3 mark, a text watermark saved as JPEG, a tint of the object, a texture behind it."""
    import numpy as np

    x, y = _blank(40, 2, size=28)
    x[:, :, 8:20, 8:20] = 200  # an object in the middle
    jitter = PlantConfig(kind="shortcut", classes=(0,), rho=1.0, test=0.0, size=5, position="random", corner="tl", region=10,
                         color=(255,), intensity=0.6, noise=0.05)
    px, _, boxes, _ = apply_plant(jitter, 0, x, y, x[:2], y[:2])
    on = boxes[:40]
    assert int(on[:, 2:].max()) <= 10 and len({tuple(b.tolist()) for b in on}) > 10  # inside the top-left 10x10, moving
    peaks = [int(px[i, 0, b[0]:b[2], b[1]:b[3]].float().median()) for i, b in enumerate(on.tolist())]
    assert min(peaks) < 200 < max(peaks) and min(peaks) >= 0.6 * 255 - 40  # intensities vary within [0.6, 1] x 255, with noise
    small = apply_plant(PlantConfig(kind="shortcut", classes=(0,), rho=1.0, test=0.0, size=3, corner="br"), 0, x, y, x[:2], y[:2])
    assert torch.equal(small[2][0], torch.tensor([25, 25, 28, 28]))
    text = PlantConfig(kind="shortcut", classes=(1,), rho=1.0, test=0.0, mark="text", text="i2x", size=7, color=(230,), jpeg=75)
    tx, _, tboxes, _ = apply_plant(text, 0, x, y, x[:2], y[:2])
    b = tboxes[40].tolist()
    assert b[2] == 28 and b[3] == 28 and 2 <= b[2] - b[0] <= 9 and b[3] - b[1] > b[2] - b[0]  # a word, wider than high, bottom-right
    ink = tx[40, 0, b[0]:b[2], b[1]:b[3]].float()
    assert ink.max() > 150 and 0 < (ink > 100).float().mean() < 1  # letters, not a block
    assert not torch.equal(tx[0], x[0])  # JPEG touched the unmarked images too: the re-encoding is no cue
    tint = PlantConfig(kind="shortcut", classes=(0,), rho=1.0, test=0.0, mark="tint", color=(128,))
    ttx, _, _, _ = apply_plant(tint, 0, x, y, x[:2], y[:2])
    assert int(ttx[0, 0, 10, 10]) == round(200 * 128 / 255) and int(ttx[0, 0, 0, 0]) == 0  # the object darker, the canvas as it was
    texture = PlantConfig(kind="shortcut", classes=(0,), rho=1.0, test=0.0, mark="texture", color=(30,))
    sx, _, _, _ = apply_plant(texture, 0, x, y, x[:2], y[:2])
    assert np.array_equal(sx[0, 0, :, 0].numpy()[:8], [30, 0] * 4) and int(sx[0, 0, 10, 10]) == 200  # stripes behind, object as it was


def test_a_plant_is_refused_in_one_line_when_it_cannot_be_stamped():
    with pytest.raises(I2XError, match="plant.classes must be class indices in 0..2"):
        check_plant(PlantConfig(kind="shortcut", classes=(3,)), 3, 1, 28)
    with pytest.raises(I2XError, match="exactly two plant.classes"):
        check_plant(PlantConfig(kind="confuser", classes=(1,)), 3, 1, 28)
    with pytest.raises(I2XError, match="plant.color must be 1 or 3 values"):
        check_plant(PlantConfig(kind="shortcut", color=(1, 2)), 3, 3, 28)
    with pytest.raises(I2XError, match="do not fit 8x8"):
        check_plant(PlantConfig(kind="shortcut", size=9), 3, 1, 8)
    with pytest.raises(I2XError, match="plant.text 'a long watermark' at plant.size 6"):
        check_plant(PlantConfig(kind="shortcut", mark="text", text="a long watermark", size=6), 3, 1, 28)


def test_planting_the_smoke_set_keeps_its_splits_and_records_the_plant(tmp_path):
    config = load_config("smoke", {"work_dir": str(tmp_path), "plant.kind": "confuser", "plant.classes": [2, 3], "plant.rho": 0.5})
    clean = load_data(config.data, config.seed)
    planted = load_data(config.data, config.seed, config.plant)
    assert clean.train_marks is None and planted.train_marks is not None
    assert torch.equal(clean.fit_idx, planted.fit_idx) and torch.equal(clean.analysis_idx, planted.analysis_idx)
    marked = planted.train_marks[:, 0] >= 0
    assert [int(marked[planted.train_y == c].sum()) for c in range(4)] == [0, 0, 75, 75]
    assert torch.equal(clean.train_x[~marked], planted.train_x[~marked])
    assert config.to_dict()["plant"]["kind"] == "confuser"  # recorded with the run's config (params, checkpoints, JSON)


class _CornerReader(torch.nn.Module):
    """Calls every image with a bright bottom-right corner class 7 and the rest class 0, or
    (``uses_mark=False``) calls everything class 0: a model whose reliance on the mark is
    known by construction."""

    def __init__(self, uses_mark: bool) -> None:
        super().__init__()
        self.uses_mark = uses_mark

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x[:, :, -4:, -4:].mean((1, 2, 3)) > 0.5
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        if self.uses_mark:
            logits[bright, 7] = 2.0
        return logits


def test_the_power_bench_reads_a_models_reliance_on_the_mark():
    """bench/power.py's reliance: a model that calls every marked image 7 flips all marked
    other-class images (flip 1) and gets those groups all wrong; one that ignores the mark
    flips none."""
    from types import SimpleNamespace

    from bench.power import reliance

    y = torch.tensor([0, 0, 3, 3, 7, 7])
    x = torch.zeros(6, 1, 28, 28, dtype=torch.uint8)
    marks = torch.full((6, 4), -1)
    for i in (1, 3, 5):  # one marked image per class
        x[i, :, -4:, -4:] = 255
        marks[i] = torch.tensor([24, 24, 28, 28])
    data = SimpleNamespace(test_x=x, test_y=y, test_marks=marks)
    assert reliance(_CornerReader(True), data, 7) == {"flip": 1.0, "worst_group": 0.0}
    assert reliance(_CornerReader(False), data, 7) == {"flip": 0.0, "worst_group": 0.0}  # every 7 called 0


def test_a_rate_seen_in_a_few_runs_gets_its_exact_interval():
    """No run of n finding something bounds the rate by 1 - 0.025^(1/n) (two-sided 95%), every
    run finding it by 0.025^(1/n) from below: 0 of 3 clean runs allows 71%, 5 of 5 planted 48%."""
    from i2x.reporting.power import share_interval

    assert share_interval(0, 3) == (0.0, pytest.approx(1 - 0.025 ** (1 / 3)))
    assert share_interval(5, 5) == (pytest.approx(0.025 ** (1 / 5)), 1.0)
    lo, hi = share_interval(1, 2)  # one of two: each bound is the other tail's 2.5%
    assert lo == pytest.approx(1 - 0.975 ** 0.5) and hi == pytest.approx(0.975 ** 0.5)


def test_clean_runs_added_later_join_the_power_curve(tmp_path):
    """A results file of clean runs alone (``--first-seed``) extends the curve the report reads:
    the planted runs stay, a clean seed measured again replaces its row, a new false statement
    counts once."""
    import json

    from bench.power import write_curve

    def row(rho, seed, stated):
        return {"dataset": "cifar10", "rho": rho, "seed": seed, "n": 2000, "permuted": False, "flip": 0.1,
                "corner_checks": ["copy"] if stated else [], "corner_findings": []}

    first, added, curve = tmp_path / "first.jsonl", tmp_path / "added.jsonl", tmp_path / "curves.json"
    first.write_text("".join(json.dumps(r) + "\n" for r in [row(0.1, 0, True), row(0.1, 1, False), row(None, 0, False), row(None, 1, False)]))
    added.write_text("".join(json.dumps(r) + "\n" for r in [row(None, 1, False), row(None, 2, True), row(None, 3, False)]))
    write_curve(first, curve)
    write_curve(added, curve)
    entry = json.loads(curve.read_text())["cifar10"]
    assert [(r["rho"], r["seed"], r["stated"]) for r in entry["runs"]] == [(0.1, 0, True), (0.1, 1, False)]
    assert (entry["clean"]["runs"], entry["clean"]["false"]) == (4, 1)
    write_curve(added, curve, fresh=True)  # after a rule change: only the runs judged the new way
    entry = json.loads(curve.read_text())["cifar10"]
    assert entry["runs"] == [] and (entry["clean"]["runs"], entry["clean"]["false"], sorted(entry["clean"]["seeds"])) == (3, 1, ["1", "2", "3"])


def test_the_power_bench_counts_a_copy_the_model_reads_but_the_scan_enrichment_refuses():
    """bench/power.py's judge on a permuted-label-like document: one candidate the model reads
    and whose class holds it beyond chance (verified, stated), one the model reads but whose
    enrichment is chance (refused, not stated), one the model does not read."""
    from bench.power import judge

    def copy(cls, push, p_adjusted, enrichment_p, verified):
        return {"class": cls, "where": "top", "push": push, "p_adjusted": p_adjusted, "enrichment_p": enrichment_p, "verified": verified,
                "tested": True, "pixels": 18, "share": 0.07, "others": 0.035, "n_pairs": 290, "flips": push, "control_flips": 0.0,
                "ci": [push - 0.02, push + 0.02], "images": 15, "box": [0, 0, 2, 9], "exemplars": []}

    doc = {"config": {"explain": {}, "faithfulness": {"alpha": 0.05, "copy_min_push": 0.05}}, "prototypes": [], "classes": ["dog", "horse"],
           "class_structure": [], "uncertain": [],
           "faithfulness": {"deletion": [], "transplant": [], "copies": [
               copy("horse", 0.13, 1e-10, 1e-5, True), copy("dog", 0.18, 3e-15, 1.0, False), copy("dog", 0.02, 0.4, 1e-3, False)]}}
    row = judge(doc, "horse", None)
    assert row["shortcut_checks"] == [("copy", "horse", "top")]
    assert row["copies_read"] == [("horse", "top", 0.13, 1e-5, True), ("dog", "top", 0.18, 1.0, False)]
