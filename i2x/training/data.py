"""Data sets (a registry), seeded splits, and batching.

Every data set is loaded once into memory as a ``uint8`` tensor ``(N, C, H, W)``:
the supported sets are small images (MNIST 47 MB, CIFAR-10 150 MB), and on a 2-core
CPU decoding files every epoch would cost more than training. Models take float
pixels in [0, 1] and normalise inside (see :mod:`i2x.training.models`), so saliency and
perturbations work on plain pixels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2x.platform.config import DataConfig, PlantConfig
from i2x.platform.errors import I2XError
from i2x.platform.progress import steps
from i2x.training.checkpoints import atomic_path
from i2x.training.plants import apply_plant, check_plant
from i2x.training.synthetic import SYNTHETIC_CLASSES, make_synthetic

DATA_DIR_ENV = "I2X_DATA_DIR"
CACHE_DIR_ENV = "I2X_CACHE_DIR"

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@dataclass(frozen=True)
class RawSplits:
    """What a loader returns: both official splits as uint8 tensors."""

    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]


@dataclass(frozen=True)
class DataBundle:
    """A loaded data set with its seeded splits.

    Attributes:
        train_x / train_y: the official training set, ``(N, C, H, W)`` uint8 / ``(N,)``.
        test_x / test_y: the official test set (never used for tuning).
        fit_idx: indices into ``train_x`` used to fit the model.
        val_idx: indices into ``train_x`` held out for validation.
        analysis_idx: seeded, stratified subset of ``fit_idx`` that the explanation uses.
        mean / std: per-channel statistics of the fit split, in [0, 1] pixel units.
        train_marks / test_marks: ``(N, 4)`` boxes ``(y0, x0, y1, x1)`` of a planted mark
            (:mod:`i2x.training.plants`), -1 where an image has none; None without a plant.
            The truth, for metrics and tests: no explanation or tuning step reads them.
        val_clean: the validation images as they were before the plant (None without one):
            the truth's held-out set for the DFR baseline (:mod:`i2x.repair.baselines`).
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    fit_idx: torch.Tensor
    val_idx: torch.Tensor
    analysis_idx: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_marks: torch.Tensor | None = None
    test_marks: torch.Tensor | None = None
    val_clean: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


Loader = Callable[[DataConfig, Path | None], RawSplits]

def data_root(cfg: DataConfig) -> Path | None:
    """``cfg.root``, else ``$I2X_DATA_DIR``, else None (torchvision default ``./data``)."""
    root = cfg.root or os.environ.get(DATA_DIR_ENV, "")
    return Path(root).expanduser() if root else None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "i2x"))


def _from_torchvision(cls: type, root: Path | None, download: bool, name: str, hint: str) -> RawSplits:
    where = root or Path("data")
    try:
        train = cls(str(where), train=True, download=download)
        test = cls(str(where), train=False, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted", or a reader's shape error
        if not str(exc).startswith("Dataset not found"):  # the files are there but short: a cut-off copy or download
            raise I2XError(
                f"{name} files under {where.resolve()} are truncated or corrupt ({str(exc).splitlines()[0]}); "
                f"replace them with the original files, or delete them and let torchvision download them"
            ) from exc
        raise I2XError(
            f"{name} not found under {where.resolve()} ({str(exc).splitlines()[0]}); "
            f"{hint}, or set data_dir / {DATA_DIR_ENV}"
        ) from exc
    except OSError as exc:  # download failed: offline
        raise I2XError(
            f"{name} not found under {where.resolve()} and the download failed "
            f"({type(exc).__name__}); {hint}, or set data_dir / {DATA_DIR_ENV}"
        ) from exc
    except (AssertionError, ValueError, IndexError) as exc:  # torchvision's IDX reader asserts on foreign bytes
        raise I2XError(
            f"{name} files under {where.resolve()} are not valid ({type(exc).__name__} while reading them); "
            f"replace them with the original files, or delete them and let torchvision download them"
        ) from exc

    def as_tensor(ds: object) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(ds.data))  # type: ignore[attr-defined]
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)  # type: ignore[attr-defined]

    (trx, try_), (tex, tey) = as_tensor(train), as_tensor(test)
    return RawSplits(trx, try_, tex, tey, tuple(str(c).split(" - ")[0] for c in train.classes))


def _load_mnist(cfg: DataConfig, root: Path | None) -> RawSplits:
    from torchvision.datasets import MNIST

    hint = "put torchvision's MNIST/raw/ IDX files there (e.g. data_dir=../shared/datasets)"
    return _from_torchvision(MNIST, root, cfg.download, "MNIST", hint)


def _load_fashion(cfg: DataConfig, root: Path | None) -> RawSplits:
    from torchvision.datasets import FashionMNIST

    hint = "put torchvision's FashionMNIST/raw/ IDX files there"
    return _from_torchvision(FashionMNIST, root, cfg.download, "FashionMNIST", hint)


def _load_cifar10(cfg: DataConfig, root: Path | None) -> RawSplits:
    """CIFAR-10 from torchvision's pickles, an ImageFolder tree, or the JPEG tarball.

    Looked for under the root, in this order: ``cifar-10-batches-py/`` (torchvision),
    ``train/`` + ``test/`` or ``cifar10-jpeg/{train,test}`` (ImageFolder trees), then
    ``cifar10-jpeg.tar.gz`` (unpacked once into the cache dir). Without any of them,
    torchvision downloads when ``download`` is on.
    """
    from torchvision.datasets import CIFAR10

    base = root or Path("data")
    if (base / "cifar-10-batches-py").is_dir():
        return _from_torchvision(CIFAR10, base, False, "CIFAR-10", "")
    for tree in (base, base / "cifar10-jpeg"):
        if (tree / "train").is_dir() and (tree / "test").is_dir():
            return _load_tree(tree, cfg.image_size or 32)
    tarball = base / "cifar10-jpeg.tar.gz"
    if tarball.is_file():
        return _load_tree(_unpack(tarball) / "cifar10-jpeg", cfg.image_size or 32)
    hint = (
        "put torchvision's cifar-10-batches-py/, an ImageFolder train/ + test/ tree or "
        "cifar10-jpeg.tar.gz there (e.g. data_dir=../shared/datasets)"
    )
    return _from_torchvision(CIFAR10, base, cfg.download, "CIFAR-10", hint)


def _load_imagefolder(cfg: DataConfig, root: Path | None) -> RawSplits:
    """Any user tree ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``."""
    if root is None or not (root / "train").is_dir() or not (root / "test").is_dir():
        raise I2XError(
            f"imagefolder needs data_dir with train/<class>/* and test/<class>/* "
            f"(searched {root.resolve() if root else 'no data_dir given'})"
        )
    return _load_tree(root, cfg.image_size or 32)


def _load_synthetic(cfg: DataConfig, root: Path | None) -> RawSplits:
    """Generated shapes with a planted mark; see :func:`make_synthetic`."""
    size = cfg.image_size or 32
    trx, try_, _ = make_synthetic(cfg.synthetic_per_class, seed=1, size=size, confuser=cfg.synthetic_confuser)
    tex, tey, _ = make_synthetic(max(cfg.synthetic_per_class // 3, 10), seed=2, size=size, confuser=cfg.synthetic_confuser)
    return RawSplits(trx, try_, tex, tey, SYNTHETIC_CLASSES)


# The data sets by name, one plain dict like MODELS, CAM_METHODS and PERTURBATIONS; the CLI and
# MLproject choices come from here.
DATASETS: dict[str, Loader] = {
    "mnist": _load_mnist,
    "fashion-mnist": _load_fashion,
    "cifar10": _load_cifar10,
    "imagefolder": _load_imagefolder,
    "synthetic": _load_synthetic,
}


def _unpack(tarball: Path) -> Path:
    """Unpack ``tarball`` once into the cache dir, atomically (temp dir, then rename)."""
    digest = hashlib.sha1(f"{tarball.resolve()}:{tarball.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_dir() / f"{tarball.name.split('.')[0]}-{digest}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(target)
    except FileExistsError:  # another process won the race; use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _load_tree(tree: Path, size: int) -> RawSplits:
    train_x, train_y, classes = _read_image_folder(tree / "train", size, None)
    test_x, test_y, _ = _read_image_folder(tree / "test", size, classes)
    return RawSplits(train_x, train_y, test_x, test_y, classes)


def _eight_bit(img: Any) -> Any:
    """16-bit (and 32-bit integer) greyscale scaled to 8 bits by its range; PIL's own
    ``convert("L")`` clips every value above 255 to white."""
    from PIL import Image

    if not (img.mode in ("I", "F") or img.mode.startswith("I;16")):
        return img
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8), mode="L")


def _unreadable(path: Path, exc: Exception) -> I2XError:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):  # PIL refuses images past ~179 M pixels
        return I2XError(f"image {path} is too large to decode safely ({str(exc).split(',')[0]}); downscale it or remove it")
    return I2XError(f"corrupt or unreadable image {path}: {exc}; remove or replace it")


def _read_image_folder(
    folder: Path, size: int, classes: tuple[str, ...] | None
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode a ``<class>/*`` tree into uint8 tensors, cached as ``.npz`` by listing hash."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS

    found = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    for name in found:  # class names go into JSON, MLflow tags and reports, which need text
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise I2XError(f"class folder {os.fsencode(name)!r} under {os.fsdecode(os.fsencode(folder))} is not a UTF-8 name; "
                           f"rename it (class names are written to JSON, MLflow and the report)") from None
    if not found:
        raise I2XError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
    if classes is not None and found != classes:
        raise I2XError(f"class folders of {folder} {list(found)} differ from train's {list(classes)}")
    files = [
        (p, label)
        for label, name in enumerate(found)
        for p in sorted((folder / name).iterdir())
        if p.suffix.lower() in IMG_EXTENSIONS
    ]
    if not files:
        raise I2XError(f"no images found under {folder} (extensions {', '.join(IMG_EXTENSIONS)})")
    if classes is None and len(found) < 2:
        raise I2XError(f"{folder} has one class folder ({found[0]}); a classifier needs at least 2: add a folder per class")
    empty = [name for label, name in enumerate(found) if not any(lab == label for _, lab in files)]
    if empty:
        raise I2XError(f"class folder(s) {', '.join(empty)} under {folder} hold no images; add images or remove the folder(s)")
    listing = hashlib.sha1()
    for p, _ in files:
        st = p.stat()
        listing.update(os.fsencode(p) + f":{st.st_size}:{st.st_mtime_ns}".encode())  # any file name, UTF-8 or not
    listing.update(str(size).encode())
    cached = cache_dir() / "decoded" / f"{listing.hexdigest()}.npz"
    if cached.is_file():
        with np.load(cached) as npz:
            return torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"]), found

    unreadable = (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError)
    try:
        with Image.open(files[0][0]) as first:
            mode = "L" if first.mode in ("L", "1", "I", "F") or first.mode.startswith("I;16") else "RGB"
    except unreadable as exc:
        raise _unreadable(files[0][0], exc) from exc
    channels = 1 if mode == "L" else 3
    x = np.empty((len(files), channels, size, size), dtype=np.uint8)
    for i, (path, _) in enumerate(steps(files, f"decode {folder.name}", unit="img")):
        try:
            with Image.open(path) as img:
                img = _eight_bit(img).convert(mode)
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except unreadable as exc:
            raise _unreadable(path, exc) from exc
        x[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    y = np.array([label for _, label in files], dtype=np.int64)
    with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=x, y=y)
    return torch.from_numpy(x), torch.from_numpy(y), found


def _stratified_subset(labels: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Positions into ``labels`` of a seeded subset with class proportions kept."""
    if count <= 0 or count >= len(labels):
        return torch.arange(len(labels))
    chosen = []
    classes = torch.unique(labels)
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        take = max(1, round(count * len(members) / len(labels)))
        chosen.append(members[torch.randperm(len(members), generator=gen)[:take]])
    return torch.sort(torch.cat(chosen)).values


def load_data(cfg: DataConfig, seed: int, plant: PlantConfig | None = None) -> DataBundle:
    """Load ``cfg.name``, plant ``plant``'s mark (if any), and carve the seeded validation
    and analysis subsets.

    Raises:
        I2XError: unknown data set, missing data offline, or a corrupt image.
    """
    if cfg.name not in DATASETS:
        raise I2XError(f"unknown dataset '{cfg.name}'; choose one of {', '.join(sorted(DATASETS))}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise I2XError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    raw = DATASETS[cfg.name](cfg, data_root(cfg))
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = raw.train_x, raw.train_y
    if cfg.train_limit:
        keep = _stratified_subset(train_y, cfg.train_limit, gen)
        train_x, train_y = train_x[keep].contiguous(), train_y[keep].contiguous()
    test_x, test_y = raw.test_x, raw.test_y
    if cfg.test_limit:
        keep = _stratified_subset(test_y, cfg.test_limit, gen)
        test_x, test_y = test_x[keep].contiguous(), test_y[keep].contiguous()
    if cfg.image_size and train_x.shape[-1] != cfg.image_size:
        train_x, test_x = (_resize(t, cfg.image_size) for t in (train_x, test_x))
    marks: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    clean = train_x
    if plant is not None and plant.kind != "none":
        check_plant(plant, len(raw.classes), int(train_x.shape[1]), int(train_x.shape[-1]))
        train_x, test_x, *marks = apply_plant(plant, seed, train_x, train_y, test_x, test_y)

    val_mask = torch.zeros(len(train_y), dtype=torch.bool)
    val_mask[_stratified_subset(train_y, round(cfg.val_fraction * len(train_y)), gen)] = True
    fit_idx = torch.nonzero(~val_mask).flatten()
    val_idx = torch.nonzero(val_mask).flatten()
    analysis_idx = fit_idx[_stratified_subset(train_y[fit_idx], cfg.analysis_size, gen)]

    pixels = train_x[fit_idx].float().div_(255)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return DataBundle(
        name=cfg.name,
        classes=raw.classes,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        fit_idx=fit_idx,
        val_idx=val_idx,
        analysis_idx=analysis_idx,
        mean=tuple(round(float(m), 6) for m in mean),
        std=tuple(round(float(s), 6) for s in std),
        train_marks=marks[0],
        test_marks=marks[1],
        val_clean=clean[val_idx].clone() if marks[0] is not None else None,
    )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)
