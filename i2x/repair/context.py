"""What every repair trial, baseline and evaluation reads: the final model, the finding's cells
in every training image, the i2x sets built from them, and (marked as such) the truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from i2x.platform.config import Config
from i2x.repair.edits import i2x_groups
from i2x.repair.finding import Finding
from i2x.repair.finetune import Budget
from i2x.repair.heldout import HeldOut, donor_positions, grow, judging_set, refit_set
from i2x.training.batches import to_float
from i2x.training.data import DataBundle
from i2x.training.groups import Groups


@dataclass
class RepairContext:
    """The same in every worker.

    Attributes:
        assignment: ``(N_train, h, w)`` the final model's prototype ids of the training images,
            the finding's cells marked (:func:`i2x.repair.finding.acting_on`).
        test_groups: the truth's groups of the test images (a plant or a user's group file);
            read only to score and by the baselines marked as reading it.
        true_train: ``(N_train,)`` the plant's group of every training image (the oracle's).
        assign: images -> ``(N, h, w)`` prototype ids (the final model's, the finding marked).
    """

    config: Config
    data: DataBundle
    build: Callable[[], nn.Module]
    state: dict[str, torch.Tensor]
    early_state: dict[str, torch.Tensor]
    assignment: torch.Tensor
    finding: Finding
    device: torch.device
    test_groups: Groups | None = None
    true_train: np.ndarray | None = None
    assign: Callable[[torch.Tensor], torch.Tensor] | None = None
    _cache: dict[Any, Any] = field(default_factory=dict)

    def fresh_model(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        model = self.build()
        model.load_state_dict(self.state if state is None else state)
        return model.to(self.device).eval()

    @property
    def core(self) -> torch.Tensor:
        """``(N_train, h, w)`` bool: the finding's own cells in every training image."""
        if "core" not in self._cache:
            self._cache["core"] = self.assignment == self.finding.prototype
        return self._cache["core"]

    @property
    def cells(self) -> torch.Tensor:
        """``(N_train, h, w)`` bool: the cells every strategy edits: the finding's own and
        ``tune.cue_margin`` cells around them. A finding's cells are its core (a rigid copy's one
        cell, a prototype's assigned cells); a cue that spans a cell border leaves the rest of
        itself beside them (planted MNIST: a 5-pixel mark's core cell holds 16 of its 25 pixels),
        and a paste of the core alone teaches the model to ignore a mark the test images do not
        carry (docs/repair.md)."""
        if "cells" not in self._cache:
            self._cache["cells"] = grow(self.core, self.config.tune.cue_margin)
        return self._cache["cells"]

    @property
    def groups(self) -> np.ndarray:
        """The i2x group of every training image (:func:`i2x.repair.edits.i2x_groups`)."""
        if "groups" not in self._cache:
            self._cache["groups"] = i2x_groups(self.assignment, self.data.train_y, self.finding.prototype)
        return self._cache["groups"]

    @property
    def judging(self) -> HeldOut:
        """The judging set every trial is scored on (:func:`i2x.repair.heldout.judging_set`:
        the run's seed, the cue taken out as ``tune.heldout_take_out`` says)."""
        return self.judging_for(self.config.tune.heldout_take_out)

    def judging_for(self, take_out: str) -> HeldOut:
        if ("judging", take_out) not in self._cache:
            self._cache["judging", take_out] = judging_set(self.data, self.cells, self.finding.cls, self.config.seed, take_out,
                                                           self.donor_positions())
        return self._cache["judging", take_out]

    def refit(self, seed: int) -> HeldOut:
        """i2x-dfr's refit set for an evaluation seed (:func:`i2x.repair.heldout.refit_set`; a
        new draw of the edits per seed, as DFR's repeats draw new subsets)."""
        t = self.config.tune
        if ("refit", seed) not in self._cache:
            self._cache["refit", seed] = refit_set(self.data, self.cells, self.finding.cls, seed, t.refit_take_out, t.refit_images,
                                                   self.donor_positions())
        return self._cache["refit", seed]

    def budget(self) -> Budget:
        t = self.config.tune
        return Budget(epochs=1, lr=t.repair_lr, batch_size=self.config.train.batch_size, samples=t.epoch_samples)

    def donor_positions(self) -> torch.Tensor:
        """Fit images of the finding's class whose own finding cells are a cue, not the object
        (:func:`i2x.repair.heldout.donor_positions` of :attr:`core`)."""
        if "donor_positions" not in self._cache:
            self._cache["donor_positions"] = donor_positions(self.data, self.core, self.finding.cls)
        return self._cache["donor_positions"]

    def donors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to 2,000 of :meth:`donor_positions` as floats, and the cells pasted from them."""
        if "donors" not in self._cache:
            pos = self.donor_positions()[:2000]
            self._cache["donors"] = (to_float(self.data.train_x[pos]), self.cells[pos])
        return self._cache["donors"]
