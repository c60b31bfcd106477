import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2x.platform.config import DataConfig
from i2x.platform.errors import I2XError
from i2x.training.data import DATASETS, load_data
from i2x.training.synthetic import make_synthetic

from .conftest import ROOT, SHARED_DATASETS, cli_env


def _write_tree(root: Path, per_class: int = 4, size: int = 12) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_registry_lists_all_sources():
    assert {"mnist", "fashion-mnist", "cifar10", "imagefolder", "synthetic"} <= set(DATASETS)


def test_splits_are_seeded_disjoint_and_stratified():
    cfg = DataConfig(name="synthetic", synthetic_per_class=50, analysis_size=40, val_fraction=0.2)
    a, b = load_data(cfg, seed=3), load_data(cfg, seed=3)
    assert torch.equal(a.val_idx, b.val_idx) and torch.equal(a.analysis_idx, b.analysis_idx)
    assert not set(a.val_idx.tolist()) & set(a.fit_idx.tolist())
    assert set(a.analysis_idx.tolist()) <= set(a.fit_idx.tolist())
    assert len(a.val_idx) == 40
    counts = torch.bincount(a.train_y[a.analysis_idx], minlength=4)
    assert counts.tolist() == [10, 10, 10, 10]
    c = load_data(cfg, seed=4)
    assert not torch.equal(a.val_idx, c.val_idx)


def test_synthetic_mark_is_the_only_difference_between_bar_classes():
    x, y, boxes = make_synthetic(20, seed=0)
    assert x.dtype == torch.uint8 and x.shape == (80, 1, 32, 32)
    mark = boxes[:, 0]
    assert (mark[y == 1] >= 0).all() and (mark[y != 1] == -1).all()
    assert (mark[y == 1][:, 2] <= 12).all() and (mark[y == 1][:, 3] <= 12).all()
    assert (boxes[:, 1] == -1).all()  # no confuser unless asked
    # the ring's brightness varies: faint and bright marks both occur
    ring = torch.stack([x[i, 0, b[0], b[1]] for i, b in zip(torch.nonzero(y == 1).flatten(), mark[y == 1], strict=True)])
    assert int(ring.min()) < 120 and int(ring.max()) > 200


def test_synthetic_confuser_replaces_the_shape_by_one_cue_in_two_classes():
    plain, _, _ = make_synthetic(20, seed=0)
    x, y, boxes = make_synthetic(20, seed=0, confuser=0.5)
    planted = boxes[:, 1, 0] >= 0
    assert set(y[planted].tolist()) == {2, 3} and int(planted.sum()) == 20  # half of column and of diagonal
    assert torch.equal(x[~planted], plain[~planted])  # the rest of the set is unchanged
    for i in torch.nonzero(planted).flatten():
        y0, x0, y1, x1 = boxes[i, 1].tolist()
        assert (x[i, 0, y0:y1, x0:x1] == 200).all()
        rest = x[i, 0].clone()
        rest[y0:y1, x0:x1] = 0
        assert int(rest.max()) < 60  # no bar, column or diagonal left


def test_imagefolder_tree_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    _write_tree(tmp_path / "tree")
    data = load_data(DataConfig(name="imagefolder", root=str(tmp_path / "tree"), image_size=16, val_fraction=0.25, analysis_size=4), seed=0)
    assert data.classes == ("cat", "dog")
    assert data.train_x.shape == (8, 3, 16, 16) and data.test_x.shape == (8, 3, 16, 16)


def test_corrupt_image_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    _write_tree(tmp_path / "tree")
    bad = tmp_path / "tree" / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(I2XError) as err:
        load_data(DataConfig(name="imagefolder", root=str(tmp_path / "tree")), seed=0)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_imagefolder_without_tree_says_what_to_do(tmp_path):
    with pytest.raises(I2XError, match="train/<class>"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)


def test_missing_mnist_offline_is_one_line_with_the_path(tmp_path):
    with pytest.raises(I2XError) as err:
        load_data(DataConfig(name="mnist", root=str(tmp_path), download=False), seed=0)
    msg = str(err.value)
    assert str(tmp_path) in msg and "data_dir" in msg and "\n" not in msg


def test_missing_data_cli_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "i2x.cli", "train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
         "--overrides", "data.download=false"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("i2x: error: MNIST not found under") and str(tmp_path / "empty") in last


@pytest.mark.skipif(not (SHARED_DATASETS / "MNIST" / "raw").is_dir(), reason="needs ../shared/datasets")
def test_real_mnist_from_shared_copy():
    data = load_data(DataConfig(name="mnist", root=str(SHARED_DATASETS), download=False, analysis_size=100), seed=0)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.classes == tuple(str(d) for d in range(10))
    assert abs(data.mean[0] - 0.1307) < 0.002  # MNIST's well-known mean


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATASETS / "cifar10-jpeg.tar.gz").is_file(), reason="needs ../shared/datasets")
def test_real_cifar10_from_shared_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    data = load_data(DataConfig(name="cifar10", root=str(SHARED_DATASETS), download=False, analysis_size=100), seed=0)
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    # unpacked once, atomically: a second load reuses the cache
    assert len(list((tmp_path / "cache").glob("cifar10-*"))) == 1
    assert ROOT.exists()


def test_an_empty_class_folder_or_a_single_class_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    _write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "bird").mkdir()
    (tmp_path / "tree" / "test" / "bird").mkdir()
    with pytest.raises(I2XError, match=r"class folder\(s\) bird under .*train hold no images"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path / "tree")), seed=0)
    single = tmp_path / "single"
    for split in ("train", "test"):
        (single / split / "cat").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(single / split / "cat" / "0.png")
    with pytest.raises(I2XError, match="one class folder"):
        load_data(DataConfig(name="imagefolder", root=str(single)), seed=0)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path, monkeypatch):
    """A planted ramp: 16-bit values 0..65535 must become 0..255 in order, not 99% white."""
    monkeypatch.setenv("I2X_CACHE_DIR", str(tmp_path / "cache"))
    ramp = np.linspace(0, 65535, 8 * 8).reshape(8, 8).astype(np.uint16)
    for split in ("train", "test"):
        for cls, img in (("dark", ramp // 4), ("ramp", ramp)):
            folder = tmp_path / "tree" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(img).save(folder / f"{i}.png")  # uint16: mode I;16
    data = load_data(DataConfig(name="imagefolder", root=str(tmp_path / "tree"), image_size=8, val_fraction=0.5, analysis_size=2), seed=0)
    x = data.test_x[data.test_y == data.classes.index("ramp")][0, 0].numpy().astype(int)
    expected = np.round(ramp.astype(float) / 65535 * 255).astype(int)
    assert np.abs(x - expected).max() <= 1
    assert (x == 255).mean() < 0.05


@pytest.mark.parametrize("pad", [0, 1, 2, 4])
def test_augment_is_a_reflect_padded_crop_and_flip_per_image(pad):
    """The batched gather against a per-image reference written from the definition: pad
    each image by reflection, cut the window at the drawn offset, mirror where drawn."""
    from i2x.training.batches import augment

    x = torch.rand(16, 3, 9, 7)
    out = augment(x, torch.Generator().manual_seed(5), pad)
    gen = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 2 * pad + 1, (16,), generator=gen), torch.randint(0, 2 * pad + 1, (16,), generator=gen)
    flip = torch.rand(16, generator=gen) < 0.5
    for i in range(16):
        padded = torch.nn.functional.pad(x[i : i + 1], (pad,) * 4, mode="reflect")[0] if pad else x[i]
        crop = padded[:, dy[i] : dy[i] + 9, dx[i] : dx[i] + 7]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    forced = augment(x, torch.Generator().manual_seed(5), pad, flip=torch.ones(16, dtype=torch.bool))
    assert torch.equal(forced[~flip], out[~flip].flip(-1))  # where the coin said no, the forced flip mirrors


def test_alternating_flip_mirrors_every_image_in_exactly_one_of_two_epochs():
    from i2x.training.batches import flip_schedule

    for epoch in range(4):
        a, b = flip_schedule(1000, 3, epoch), flip_schedule(1000, 3, epoch + 1)
        assert torch.equal(a, ~b)
    assert 400 < int(flip_schedule(1000, 3, 0).sum()) < 600  # a fair coin per image
