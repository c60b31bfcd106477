"""What a repair acts on: the report's lead shortcut check, as the pixels it is a claim about.

A check is stated about a prototype (its cells in every image) or about a verified rigid copy
(the same pixels at one place in a share of one class's images). Either way the repair acts
through pixels, found in any image by those pixels, not through a prototype's id: one planted
mark splits over two prototypes whose ids move with float noise between machines; its pixels
do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from i2x.explanation.copies import copy_cells
from i2x.explanation.rigid import rigid_copy

COPY_ID = -2  # the id a copy's cells get in an assignment: no prototype has it


@dataclass(frozen=True)
class Finding:
    """A verified finding to act on: prototype ``prototype`` drives class index ``cls``; for a
    rigid copy (``copy``: its explanation row, or a prototype check's own copy from
    :func:`on_its_copy`, which names its ``prototype``), ``prototype`` is :data:`COPY_ID`, the id
    its cells get in the assignment (:func:`with_copy`)."""

    prototype: int
    cls: int
    class_name: str
    statement: str
    copy: dict[str, Any] | None = None


def lead_finding(checks: Sequence[dict[str, Any]], copies: Sequence[dict[str, Any]], classes: list[str]) -> Finding | None:
    """The report's lead shortcut check as a :class:`Finding`, or None: a prototype's check
    first, else the strongest verified rigid copy.

    Args:
        checks: the report's prototype shortcut checks, lead first
            (:func:`i2x.reporting.claims.shortcut_checks`); copies: its verified copies
            (:func:`i2x.reporting.claims.copy_checks`).
    """
    if checks:
        r = checks[0]
        statement = (f"P{r['prototype']} drives class {r['class']} from the {r['where']['region']} of the image "
                     "(the report's lead shortcut check)")
        return Finding(int(r["prototype"]), classes.index(r["class"]), r["class"], statement)
    if not copies:
        return None
    c = copies[0]
    statement = (f"a rigid copy in the {c['where']} of the image drives class {c['class']} (the report's lead shortcut check: "
                 f"{c['pixels']} pixels in {100 * c['share']:.0f}% of its images)")
    return Finding(COPY_ID, classes.index(c["class"]), c["class"], statement, copy=c)


def with_copy(assign: Callable[[torch.Tensor], torch.Tensor], finding: Finding, grid: tuple[int, int],
              tolerance: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``assign`` (images -> prototype ids per cell), with the cells a rigid copy covers set to
    :data:`COPY_ID` in the images that hold it, so that every repair strategy acts on the copy's
    cells as it would on a prototype's; ``assign`` itself when the finding is a prototype's."""
    if finding.copy is None:
        return assign

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        ids = assign(x)
        return torch.where(copy_cells(x, finding.copy, grid, tolerance), torch.as_tensor(finding.prototype, dtype=ids.dtype), ids)

    return wrapped


def on_its_copy(finding: Finding, images: torch.Tensor, assignment: torch.Tensor, labels: torch.Tensor,
                min_rigid: float = 0.0) -> Finding:
    """A prototype's finding as the rigid copy its shortcut check is a claim about (the check
    requires one): the pixels of its best core cell, found by those pixels in any image
    (:func:`~i2x.explanation.rigid.rigid_copy`), so that the repair's cells and the i2x groups
    do not hang on which of a mark's prototypes the model assigns a cell to. The finding itself
    when it is already a copy, or when no cell of the prototype holds one at least ``min_rigid``
    rigid (a cue stated by its one shape moves or varies: the repair then acts on the
    prototype's cells in each image, wherever they are).

    Args:
        images: ``(N, C, H, W)`` uint8 training images; assignment: ``(N, h, w)`` their
            prototype ids (the final model's); labels: ``(N,)``.
    """
    if finding.copy is not None:
        return finding
    row = rigid_copy(images, np.asarray(assignment), np.asarray(labels), finding.prototype, finding.cls)
    if row is None or row["rigid"] < min_rigid:
        return finding
    y0, x0, y1, x1 = row["box"]
    statement = (f"{finding.statement}; the repair acts on its rigid copy, the {row['pixels']} pixels it holds at rows "
                 f"{y0}-{y1 - 1}, columns {x0}-{x1 - 1} wherever they appear")
    return replace(finding, prototype=COPY_ID, statement=statement, copy=row)


def copy_floor(doc: dict[str, Any], finding: Finding, shortcut_rigid: float) -> float:
    """``min_rigid`` for :func:`acting_on`: 0 where the document measured the finding's
    prototype a rigid copy (its check's condition; or before the measure existed), so the repair
    acts on its copy's pixels whatever its score on the training images; infinite where it is
    no rigid copy (a cue the user named, or stated by its shape), so the repair acts on its cells
    in each image."""
    if finding.prototype < 0 or finding.prototype >= len(doc.get("prototypes", [])):
        return 0.0
    rigid = (doc["prototypes"][finding.prototype].get("where") or {}).get("rigid")
    return 0.0 if rigid is None or rigid >= shortcut_rigid else float("inf")


def acting_on(finding: Finding, images: torch.Tensor, labels: torch.Tensor, assignment: torch.Tensor,
              plain: Callable[[torch.Tensor], torch.Tensor], tolerance: float, min_rigid: float = 0.0,
              ) -> tuple[Finding, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """What a repair acts on: (the finding, :func:`on_its_copy`; the training images'
    assignment with its cells marked; ``plain`` (images -> prototype ids) wrapped the same way).

    Args:
        images / labels: the training split, ``(N, C, H, W)`` uint8 / ``(N,)``; assignment:
            ``(N, h, w)`` their prototype ids. min_rigid: see :func:`on_its_copy` and
            :func:`copy_floor`.
    """
    finding = on_its_copy(finding, images, assignment, labels, min_rigid)
    grid = tuple(assignment.shape[-2:])
    assign = with_copy(plain, finding, grid, tolerance)
    if finding.copy is None:
        return finding, assignment, assign
    return finding, with_copy(lambda _x: assignment, finding, grid, tolerance)(images), assign
