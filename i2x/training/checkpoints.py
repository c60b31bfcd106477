"""Self-describing checkpoints: the schedule, atomic writes and safe loading (METHOD step 1)."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from i2x.platform.config import Config
from i2x.platform.config_io import config_from_dict
from i2x.platform.errors import I2XError
from i2x.training.models import Classifier, build_model, load_weights

CHECKPOINT_FORMAT = "i2x.checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


def checkpoint_steps(
    steps_per_epoch: int, epochs: int, fractions: Sequence[float], every_epoch: bool = True
) -> list[int]:
    """Optimizer steps after which to checkpoint: dense in epoch 1, then each epoch's end.

    Args:
        steps_per_epoch: batches per epoch.
        epochs: total epochs.
        fractions: fractions of epoch 1, e.g. ``(0.1, 0.25, 0.5)``.
        every_epoch: add the last step of every epoch.

    Returns:
        Sorted, unique step numbers in ``[1, epochs * steps_per_epoch]``; the last one is
        always the final step, so the final model is always a checkpoint.
    """
    total = steps_per_epoch * epochs
    steps = {max(1, min(total, round(f * steps_per_epoch))) for f in fractions if 0 < f <= epochs}
    if every_epoch:
        steps.update(e * steps_per_epoch for e in range(1, epochs + 1))
    steps.add(total)
    return sorted(steps)


@dataclass(frozen=True)
class CheckpointInfo:
    """One row of ``checkpoints/index.json``."""

    step: int
    epoch: float
    metrics: dict[str, float]
    file: str

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "metrics": self.metrics, "file": self.file}


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed over ``path`` when the block ends,
    removed when it raises (a disk that filled up mid-write keeps no half file, and gets its
    space back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = exc if isinstance(exc, OSError) else exc.__cause__ or exc.__context__  # torch.save wraps the write's OSError
        if isinstance(cause, OSError) and cause.errno and cause.filename is None:  # a write names no file: name ours
            raise OSError(cause.errno, cause.strerror, str(path)) from exc
        raise


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` atomically: a crash never leaves a truncated file under ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise I2XError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before it refuses the file
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc):  # weights_only refused a global: code or foreign objects
            raise I2XError(f"checkpoint {path} holds objects other than tensors and plain data, which i2x refuses to load "
                           "(weights_only=True); it is not an i2x checkpoint: delete it, or retrain") from None
        raise I2XError(f"checkpoint {path} cannot be read ({type(exc).__name__}); it is corrupt or not an i2x checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise I2XError(f"checkpoint {path} is not an i2x checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return payload


def model_from_checkpoint(payload: dict[str, Any], source: str, expect: Config | None = None) -> Classifier:
    """Rebuild the model a checkpoint describes and load its weights.

    Args:
        payload: from :func:`read_checkpoint`.
        source: a name for error messages.
        expect: when given, the checkpoint must hold this config's architecture.
    """
    cfg = config_from_dict(payload["config"])
    if expect is not None and expect.model.name != cfg.model.name:
        raise I2XError(
            f"checkpoint {source} holds model '{cfg.model.name}' but the config asks for "
            f"'{expect.model.name}'; use model.name={cfg.model.name}"
        )
    meta = payload["data"]
    model = build_model(
        expect.model if expect else cfg.model, meta["channels"], len(meta["classes"]), meta["mean"], meta["std"]
    )
    load_weights(model, payload["model"], source)
    return model


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder`` sorted by step (temp files are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def step_of(path: Path) -> int:
    match = _NAME.match(Path(path).name)
    if not match:
        raise I2XError(f"{path} is not named ckpt-<step:08d>.pt")
    return int(match.group(1))


def write_index(folder: Path, rows: list[CheckpointInfo]) -> Path:
    path = folder / "index.json"
    atomic_write_text(path, json.dumps([r.to_dict() for r in rows], indent=2, sort_keys=True))
    return path


def epoch_of(step: int, steps_per_epoch: int) -> float:
    return round(step / steps_per_epoch, 4) if steps_per_epoch else 0.0


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def check_data_fits(final: dict[str, Any], data: Any, config: Config) -> None:
    """Refuse data that is not what the checkpoints were trained on (another class list,
    channel count or size, e.g. ``--data-dir`` at another ImageFolder tree): labels would
    index the wrong logits and the explanation would be silently wrong."""
    meta = final["data"]
    ours = {"classes": list(data.classes), "channels": data.channels, "image_size": data.image_size}
    theirs = {k: meta[k] for k in ours}
    if ours != theirs:
        diff = "; ".join(f"{k} {ours[k]} here, {theirs[k]} in the checkpoints" for k in ours if ours[k] != theirs[k])
        raise I2XError(f"the data under {config.data.root or '(default root)'} is not what the checkpoints were trained on ({diff}); "
                       "point --data-dir at the training data")


def check_same_run(final: dict[str, Any], final_path: Path, payload: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint of another training run (another seed, data, model, recipe, class
    list or architecture) in one explain call: the analysis would stitch two models' histories."""
    def identity(p: dict) -> dict[str, object]:
        flat = config_from_dict(p["config"]).flat()
        keys = {k: v for k, v in flat.items() if k.split(".")[0] in ("run", "data", "model", "train")
                and k not in ("run.work_dir", "data.root", "data.download", "train.log_every", "train.eval_batch_size", "train.device")}
        return {**keys, "arch": p.get("arch"), "classes": p["data"]["classes"]}

    want, got = identity(final), identity(payload)
    diff = [k for k in want if want[k] != got.get(k)]
    if diff:
        shown = ", ".join(f"{k} {got.get(k)} vs {want[k]}" for k in diff[:3])
        raise I2XError(f"checkpoint {path.name} is not from the training run of {final_path.name} ({shown}); "
                       "explain the checkpoints of one run (one folder per run)")
