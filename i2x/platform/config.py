"""Frozen, typed configuration: one dataclass per section, its defaults and docs.

:mod:`i2x.platform.config_io` reads it (``configs/*.yaml``, ``key=value`` overrides, checkpoints)
and checks every value's type and range. Every choice the method marks as OURS is a field here
with its default; the resolved config is logged to MLflow and stored in every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import yaml

from i2x.platform.config_steps import ExplainConfig, FaithfulnessConfig, TuneConfig
from i2x.platform.settings import Check, setting

CONFIG_DIR_ENV = "I2X_CONFIG_DIR"
SECTIONS = ("data", "plant", "model", "train", "explain", "faithfulness", "tune")
# Keys that older versions wrote into checkpoints and that no longer exist: ignored when a
# checkpoint's config is read back, refused everywhere else.
RETIRED_KEYS = frozenset({"explain.r2_holdout", "explain.shortcut_max_overlap", "faithfulness.fill"})


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, and how it is split.

    Attributes:
        name: a key of :data:`i2x.training.data.DATASETS`.
        root: a local root; empty means ``$I2X_DATA_DIR``, then ``./data``.
        download: let torchvision download when the root lacks the files.
        image_size: square side the images are resized to; 0 keeps the native size.
        val_fraction: share of the training set held out for validation (tuning
            selects on it; the test set is never used for tuning).
        train_limit: use a seeded, stratified subset of this many training images
            (0 = all). For quick configs only.
        test_limit: the same for the test set.
        analysis_size: size of the seeded, stratified analysis subset (drawn from the
            training portion) that the explanation runs on.
        augment: random crop and horizontal flip while training.
        translate: the crop's reflect padding in pixels (airbench: 2).
        flip: ``random`` (a coin per image and batch) or ``alternating`` (airbench: a
            seeded coin per image, inverted every other epoch).
        synthetic_per_class: images per class and split for the ``synthetic`` set.
        synthetic_confuser: share of the ``column`` and of the ``diagonal`` images replaced by a
            planted confuser (see :func:`i2x.training.synthetic.make_synthetic`); 0: none.
    """

    name: str = "mnist"
    root: str = ""
    download: bool = True
    image_size: int = setting(0, lo=8, hi=4096, zero=True)
    val_fraction: float = setting(0.1, above=0, below=1)
    train_limit: int = setting(0, lo=20, zero=True)
    test_limit: int = setting(0, lo=20, zero=True)
    analysis_size: int = setting(1000, lo=20, zero=True)
    augment: bool = False
    translate: int = setting(4, lo=0, hi=16)
    flip: Literal["random", "alternating"] = "random"
    synthetic_per_class: int = setting(300, lo=10, hi=100_000)
    synthetic_confuser: float = setting(0.0, lo=0, hi=1)

    CHECKS: ClassVar[tuple[Check, ...]] = (
        Check(("translate", "image_size"), lambda d: d.image_size == 0 or 2 * d.translate < d.image_size,
              "data.translate must be less than half of data.image_size"),
    )


@dataclass(frozen=True)
class PlantConfig:
    """A defect planted in any data set after loading, so the truth is known (OURS; off by
    default). Seeded by the run's seed; recorded in params, checkpoints and the explanation.
    Groups are (class, mark present or absent): for metrics and baselines only; no explanation
    or tuning step reads them.

    Attributes:
        kind: ``shortcut``: the mark on a share ``rho`` of the training images of ``classes``
            (``other`` of the rest); ``confuser``: on ``rho`` of each of two ``classes``.
        classes: the class indices the mark goes with.
        rho: share of those classes' training images that carry the mark.
        other: share of every other class's training images that carry it.
        test: share of every class's test images marked, independently of class, so the
            model's reliance shows as a gap between groups.
        mark: ``square``, ``ring`` or ``stripes`` (a texture), ``size`` pixels a side, in
            ``color`` (one value for all channels, or one each); ``text`` (``text`` rendered
            ``size`` pixels high, a watermark); ``tint`` (the object's pixels scaled by ``color``
            / 255 per channel, Colored-MNIST style); ``texture`` (faint stripes of amplitude
            ``color`` on the background behind the object).
        size: the mark's side in pixels (the text's height).
        color: its pixel value (one for all channels, or one per channel).
        position: ``fixed`` (in ``corner``) or ``random`` (inside the corner's square of side
            ``region``; 0: twice the size).
        corner: ``tl``, ``tr``, ``bl`` or ``br``: where a fixed mark sits, or the corner of a
            random one's square.
        region: side of that square for ``position: random`` (0: twice the mark's size).
        intensity: each image's mark drawn at ``color`` times a factor from ``intensity`` to 1
            (1: every mark the same).
        noise: standard deviation of pixel noise added to the mark (pixels in [0, 1]).
        jpeg: JPEG quality every image of both splits is saved at after planting (0: not
            re-encoded; the PASCAL VOC horse tag was such a watermark).
        text: the watermark of ``mark: text``.
        group_file: a CSV ``id,group`` (test-image index -> group): a user's own groups.
    """

    kind: Literal["none", "shortcut", "confuser"] = "none"
    classes: tuple[int, ...] = setting((0,), lo=0, hi=100_000, nonempty=True)
    rho: float = setting(0.95, lo=0, hi=1)
    other: float = setting(0.0, lo=0, hi=1)
    test: float = setting(0.5, lo=0, hi=1)
    mark: Literal["square", "ring", "stripes", "text", "tint", "texture"] = "square"
    size: int = setting(5, lo=1, hi=256)
    color: tuple[int, ...] = setting((255,), lo=0, hi=255, nonempty=True)
    position: Literal["fixed", "random"] = "fixed"
    corner: Literal["tl", "tr", "bl", "br"] = "br"
    region: int = setting(0, lo=0, hi=4096)
    intensity: float = setting(1.0, above=0, hi=1)
    noise: float = setting(0.0, lo=0, hi=1)
    jpeg: int = setting(0, lo=1, hi=100, zero=True)
    text: str = "i2x"
    group_file: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture.

    Attributes:
        name: a key of :data:`i2x.training.models.MODELS`.
        width: base channel count of the compact CNN and the fast net (ignored by the
            ResNets); 0: the registry's default (cnn 16, fastnet 64), or with ``name=auto``
            the device's width (:data:`i2x.training.models.AUTO_MODELS`). A width given is kept.
    """

    name: str = "cnn"
    width: int = setting(0, lo=1, hi=4096, zero=True)


@dataclass(frozen=True)
class TrainConfig:
    """Training and the checkpoint schedule (METHOD step 1).

    Attributes:
        epochs: passes over the fit split.
        batch_size: images per optimizer step.
        optimizer: ``sgd`` (with ``momentum``) or ``adam``.
        lr: the peak learning rate of ``lr_schedule``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        eval_batch_size: images per batch when evaluating.
        log_every: steps between logged training metrics.
        checkpoint_fractions: fractions of epoch 1 at which to checkpoint (OURS: the
            paper only says "selected checkpoints"; learning moves fast early, so the
            schedule is dense at the start).
        checkpoint_every_epoch: also checkpoint at the end of every epoch.
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        num_threads: torch intra-op threads; 0 keeps torch's default.
        label_smoothing: cross-entropy label smoothing (airbench's recipe uses 0.2).
        lr_schedule: ``onecycle`` (warm-up 15%, cosine down), ``cosine``, ``constant`` or
            ``triangle`` (airbench: 0.2x rising to the peak at 23%, then down to 0.07x).
        bias_lr_scale: BatchNorm parameters train at this multiple of the rate, with the
            weight decay divided by it so their decay per step is unchanged (airbench: 64).
        lookahead_every: every this many steps, pull the weights toward an average of
            themselves and copy it back (airbench's lookahead; 0: off). The average's
            decay is ``0.95**every * (step/total)**3`` and it is copied back at every epoch
            end, so each checkpoint holds the averaged weights.
        lookahead_start: epochs before the lookahead starts (airbench: 3).
        register_as: register the trained model under this name in the MLflow model
            registry (a new version per run); empty: logged, not registered.
        tta_level: the final test accuracy is also reported with test-time augmentation:
            1 averages the mirrored image, 2 also one-pixel shifts (airbench: 2; 0: not
            reported). Every checkpoint and explanation is of the plain model.
    """

    epochs: int = setting(3, lo=1, hi=10_000)
    batch_size: int = setting(128, lo=1, hi=1_000_000)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = setting(0.05, above=0, hi=1e6)
    momentum: float = setting(0.9, lo=0, hi=1)
    weight_decay: float = setting(5e-4, lo=0, hi=1)
    lr_schedule: Literal["onecycle", "cosine", "constant", "triangle"] = "onecycle"
    checkpoint_fractions: tuple[float, ...] = setting((0.1, 0.25, 0.5), above=0, hi=1, nonempty=True)
    checkpoint_every_epoch: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = setting(1000, lo=1, hi=1_000_000)
    log_every: int = setting(20, lo=1, hi=1_000_000)
    num_threads: int = setting(0, lo=0, hi=1024)
    label_smoothing: float = setting(0.0, lo=0, below=1)
    bias_lr_scale: float = setting(1.0, above=0, hi=1e6)
    lookahead_every: int = setting(0, lo=0, hi=1_000_000)
    lookahead_start: float = setting(3.0, lo=0, hi=10_000)
    tta_level: int = setting(0, lo=0, hi=2)
    register_as: str = ""


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run.

    Attributes:
        seed: every random choice's seed (data splits, training, the explanation, tuning).
        work_dir: local folder of checkpoints and stage outputs (``$I2X_WORK_DIR`` wins), under
            the folder the command runs in.
    """

    seed: int = setting(0, lo=0, hi=2**32 - 1)
    work_dir: str = "mlruns/i2x-work"
    data: DataConfig = field(default_factory=DataConfig)
    plant: PlantConfig = field(default_factory=PlantConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), safe for YAML, JSON and torch.save."""
        return _plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.05, "run.seed": 0, ...}``, the form logged as MLflow params.

        Top-level keys get a ``run.`` prefix: ``mlflow run`` logs its own ``seed`` param,
        and MLflow refuses a second value for the same key.
        """
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[f"run.{key}"] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
