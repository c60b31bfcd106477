"""Groups of test images and their accuracies: worst-group accuracy and the gap between the
images where a planted mark agrees with its training correlation and those where it does not.

Groups come from the truth, never from the explanation: a plant's (class, mark present or
absent), or a user's CSV of test-image index -> group (a real spurious attribute). They are
for metrics and baselines only; no explanation or tuning step may read them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from i2x.platform.config import PlantConfig
from i2x.platform.errors import I2XError, read_user_text
from i2x.training.evaluation import metric_name


@dataclass(frozen=True)
class Groups:
    """Test images in groups.

    Attributes:
        names: one name per group.
        of_image: ``(N_test,)`` group index of each test image; -1: in no group.
        aligned: per group, whether the mark agrees with its training correlation (planted
            groups); None for a user's groups.
        source: ``plant`` or the group file's path.
    """

    names: tuple[str, ...]
    of_image: np.ndarray
    aligned: tuple[bool, ...] | None
    source: str


def planted_groups(plant: PlantConfig, classes: tuple[str, ...], test_y: np.ndarray, test_marks: np.ndarray) -> Groups:
    """(class, mark present or absent) of every test image: ``2 * class + present``.

    Args:
        test_y: ``(N,)`` labels; test_marks: ``(N, 4)`` mark boxes, -1 where none.
    """
    present = (np.asarray(test_marks)[:, 0] >= 0).astype(np.int64)
    names = tuple(f"{name} {'with' if m else 'without'} mark" for name in classes for m in (0, 1))
    aligned = tuple((c in plant.classes) == bool(m) for c in range(len(classes)) for m in (0, 1))
    return Groups(names, 2 * np.asarray(test_y, dtype=np.int64) + present, aligned, "plant")


MAX_GROUP_FILE_BYTES = 64 * 2**20
MAX_GROUP_NAME = 200  # characters: a name longer than this is a pasted cell, not a group
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def read_group_file(path: str | Path, n_test: int) -> Groups:
    """A user's groups: a CSV with a header ``id,group``, one row per test image (``id`` is the
    image's index in the test split as loaded, 0-based). Images with no row are in no group.
    Read as users save it: UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8"), any
    line ending.

    Raises:
        I2XError: a missing, unreadable, oversized or non-UTF-8 file, a row that is not
            ``id,group``, an id that is not a test image, an id given twice, a group name that
            is too long, holds a control character or would share an MLflow metric name with
            another, or fewer than two groups.
    """
    path = Path(path)
    fix = f"fix {path}: a header 'id,group', then one row per test image (id = 0..{n_test - 1})"
    text = read_user_text(path, "group file", MAX_GROUP_FILE_BYTES, fix)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise I2XError(f"group file {path} is not a CSV file this reader takes ({str(exc)[:80]}); {fix}") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["id", "group"]:
        raise I2XError(f"group file {path} does not start with the header 'id,group'; {fix}")
    of_image = np.full(n_test, -1, dtype=np.int64)
    names: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not re.fullmatch(r"\d+", row[0].strip()) or not row[1].strip():
            raise I2XError(f"group file {path} line {line}: {','.join(row)!r} is not 'id,group'; {fix}")
        image = int(row[0])
        if image >= n_test:
            raise I2XError(f"group file {path} line {line}: id {image} is not a test image (the test split has {n_test}); {fix}")
        if of_image[image] >= 0:
            raise I2XError(f"group file {path} line {line}: id {image} is given twice; {fix}")
        name = row[1].strip()
        if len(name) > MAX_GROUP_NAME or _CONTROL.search(name):
            what = f"is {len(name)} characters (at most {MAX_GROUP_NAME})" if len(name) > MAX_GROUP_NAME else "holds a control character"
            raise I2XError(f"group file {path} line {line}: the group name {name[:40]!r}{'...' if len(name) > 40 else ''} {what}; "
                           "name the group in a few printable words")
        of_image[image] = names.setdefault(name, len(names))
    if len(names) < 2:
        raise I2XError(f"group file {path} has {len(names)} group(s); worst-group accuracy needs at least 2")
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(metric_name(name), name)
        if other != name:
            raise I2XError(f"group file {path}: groups {other!r} and {name!r} would share the MLflow metric "
                           f"group_accuracy/{metric_name(name)}; rename one of them")
    return Groups(tuple(names), of_image, None, str(path))


def group_table(pred: np.ndarray, y: np.ndarray, groups: Groups) -> list[dict[str, object]]:
    """One row per group: name, images, correct, accuracy (None for an empty group), aligned."""
    hit = np.asarray(pred) == np.asarray(y)
    rows = []
    for g, name in enumerate(groups.names):
        members = groups.of_image == g
        n = int(members.sum())
        rows.append({"group": name, "images": n, "correct": int(hit[members].sum()),
                     "accuracy": float(hit[members].mean()) if n else None,
                     "aligned": None if groups.aligned is None else groups.aligned[g]})
    return rows


def group_metrics(rows: list[dict[str, object]]) -> dict[str, float]:
    """MLflow metrics of a :func:`group_table`: ``worst_group_accuracy``, one
    ``group_accuracy/<group>`` each, and, for planted groups, the accuracy on images whose
    mark agrees with its training correlation, on those where it conflicts, and the gap."""
    filled = [r for r in rows if r["images"]]
    out = {"worst_group_accuracy": min(float(r["accuracy"]) for r in filled)}
    out |= {f"group_accuracy/{metric_name(str(r['group']))}": float(r["accuracy"]) for r in filled}
    if all(r["aligned"] is not None for r in filled):
        for side, flag in (("aligned", True), ("conflicting", False)):
            part = [r for r in filled if r["aligned"] is flag]
            if part:
                out[f"{side}_accuracy"] = sum(int(r["correct"]) for r in part) / sum(int(r["images"]) for r in part)
        if {"aligned_accuracy", "conflicting_accuracy"} <= set(out):
            out["aligned_conflicting_gap"] = out["aligned_accuracy"] - out["conflicting_accuracy"]
    return out



def groups_of(plant: PlantConfig, classes: tuple[str, ...], test_y: np.ndarray, test_marks: np.ndarray | None) -> Groups | None:
    """The run's groups: the user's file when ``plant.group_file`` is set, else the plant's,
    else None. Read before any run opens, so a bad file is one line and no run."""
    if plant.group_file:
        return read_group_file(plant.group_file, len(test_y))
    if test_marks is not None:
        return planted_groups(plant, classes, test_y, test_marks)
    return None


def describe(rows: list[dict[str, object]], metrics: dict[str, float]) -> str:
    """One line: worst group and, for planted groups, the aligned/conflicting gap."""
    worst = min((r for r in rows if r["images"]), key=lambda r: float(r["accuracy"]))
    line = f"worst-group accuracy {metrics['worst_group_accuracy']:.4f} ({worst['group']}, {worst['images']} images)"
    if "aligned_conflicting_gap" in metrics:
        line += (f"; mark agrees with training {metrics['aligned_accuracy']:.4f}, conflicts "
                 f"{metrics['conflicting_accuracy']:.4f} (gap {100 * metrics['aligned_conflicting_gap']:+.1f} points)")
    return line
