"""The images i2x edits with the finding's cells, reading no group label: the judging set every
repair trial is scored on, and the refit set i2x-dfr retrains the last layer on.

- **The judging set** (:func:`judging_set`) is the whole validation split, each image twice:
  as it is, and edited (the finding's cells from a fit image of its class that carries them as
  a cue pasted into every other class's image; taken out of the class's own images that carry
  it, as ``tune.heldout_take_out`` says). So every (class, finding present) group occurs, with
  every validation image of the class in it: the worst group says whether a model still reads
  the cue as its class where the cue no longer predicts it. Until this release each image went
  in once, a coin deciding whether it was pasted, and half the split was kept for i2x-dfr's
  refit: the groups the choice rested on held about 30 images each, and the choice between
  strategies agreed with the test split's ranking no better than a coin on planted MNIST
  (bench/selection.py, docs/repair.md).
- **The refit set** (:func:`refit_set`) is training images (the fit split, up to
  ``tune.refit_images``), edited once each (pasted into half of the other classes', taken out
  of half of the class's carriers by ``tune.refit_take_out``): the features are frozen, so
  this is DFR on training data (Kirichenko et al.'s DFR_Tr), on ten times the images the
  validation split holds, and never the images the refit is judged on.

How the cue is taken out (:data:`TAKE_OUT`) has a measured cost (docs/repair.md): ``mean``
fills the cells with the image's mean, a grey patch no real image has, which a repair trained
with the same fill learns as a new cue; ``swap-out`` puts there the pixels of a fit image of
the class without the finding; ``blur`` blurs the cells (at an image's corner the reflected
border keeps 82% of a planted mark's brightness); ``none`` leaves the class's images as they are.
Judged with ``none``, no group held the class without its cue, and tune chose augmentation (which
never shows the model the class without the cue) over i2x-dfr in 3 of 5 planted-MNIST seeds
where the test split's worst group was exactly that class without the mark; ``swap-out`` (the
default) sees it (bench/selection.py, docs/repair.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from i2x.training.batches import to_float
from i2x.training.data import DataBundle
from i2x.training.pixels import cell_mask, gaussian_blur

MIN_GROUP = 5  # a group with fewer images is not scored (its accuracy is noise)
MAX_PASTE_SHARE = 0.2  # of an image's cells: a cue, not the object (see donor_positions)
TAKE_OUT = ("none", "swap-out", "blur", "mean")


@dataclass(frozen=True)
class HeldOut:
    """Images edited by the explanation's cells (see the module doc), one row per image copy.

    Attributes:
        x: ``(R, C, H, W)`` uint8, each row as scored (edited or as it is); original: the same
            image unedited; y: ``(R,)`` labels.
        groups: ``(R,)`` i2x group after the edit, ``2 * class + finding present``.
        carried: ``(R,)`` bool, the image carried the finding before the edit (the final
            model's cells).
        edited: ``(R,)`` bool, this row is the edited copy of its image.
        source: ``(R,)`` the image's index into ``train_x``.
    """

    x: torch.Tensor
    original: torch.Tensor
    y: torch.Tensor
    groups: np.ndarray
    carried: np.ndarray
    edited: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def donor_positions(data: DataBundle, cells: torch.Tensor, cls: int, pool: torch.Tensor | None = None) -> torch.Tensor:
    """Images of class ``cls`` (of ``pool``, positions into ``train_x``; default the fit split)
    whose finding cells are a cue, not the object: present in at most :data:`MAX_PASTE_SHARE`
    of the image's cells. Pasting more (a broad prototype, the top of a 6) would draw the
    class's object into another class's image under that image's label, and teach the model to
    miss the class itself."""
    pool = data.fit_idx if pool is None else pool
    share = cells[pool].flatten(1).float().mean(1)
    return pool[(data.train_y[pool] == cls) & (share > 0) & (share <= MAX_PASTE_SHARE)]


def grow(cells: torch.Tensor, margin: int) -> torch.Tensor:
    """``(N, h, w)`` bool cells with ``margin`` grid cells around them (a square neighbourhood)."""
    if margin <= 0:
        return cells
    return torch.nn.functional.max_pool2d(cells.float()[:, None], 2 * margin + 1, 1, margin)[:, 0].bool()


def _edit(data: DataBundle, cells: torch.Tensor, cls: int, idx: torch.Tensor, paste: torch.Tensor, erase: torch.Tensor,
          take_out: str, gen: torch.Generator, donors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images ``train_x[idx]`` with the finding's cells pasted (``paste``, from one of
    ``donors``: positions into ``train_x``; default :func:`donor_positions` of ``cells``) or taken
    out (``erase``), as uint8, and whether each carries the finding after the edit."""
    if take_out not in TAKE_OUT:
        raise ValueError(f"take_out must be one of {', '.join(TAKE_OUT)}, got {take_out!r}")
    x, c = to_float(data.train_x[idx]), cells[idx]
    present = c.flatten(1).any(1)
    donors = donor_positions(data, cells, cls) if donors is None else donors
    paste = paste & (len(donors) > 0)
    erase = erase & present & (take_out != "none")
    size = tuple(x.shape[-2:])
    if paste.any():
        which = donors[torch.randint(0, len(donors), (int(paste.sum()),), generator=gen)]
        m = cell_mask(cells[which], size)
        x[paste] = x[paste] * (1 - m) + to_float(data.train_x[which]) * m
    if erase.any():
        m = cell_mask(c & erase[:, None, None], size)
        if take_out == "mean":
            fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        elif take_out == "blur":
            fill = gaussian_blur(x, 1.5)
        else:  # swap-out: the pixels of a fit image of the class without the finding
            free = data.fit_idx[(data.train_y[data.fit_idx] == cls) & ~cells[data.fit_idx].flatten(1).any(1)]
            fill = x.flatten(2).median(dim=2).values[:, :, None, None].expand_as(x).clone()  # when no image of the class lacks it
            if len(free):
                fill[erase] = to_float(data.train_x[free[torch.randint(0, len(free), (int(erase.sum()),), generator=gen)]])
        x = x * (1 - m) + fill * m
    return (x * 255).round().clamp(0, 255).to(torch.uint8), (present & ~erase) | paste


def judging_set(data: DataBundle, cells: torch.Tensor, cls: int, seed: int, take_out: str = "none",
                donors: torch.Tensor | None = None) -> HeldOut:
    """The judging set: every validation image as it is, and an edited copy of every image of
    the other classes (the finding's cells pasted from a random donor) and, unless ``take_out``
    is ``none``, of every image of class ``cls`` that carries it (taken out)."""
    gen = torch.Generator().manual_seed(seed * 104_729 + 17)
    val = data.val_idx
    y = data.train_y[val]
    present = cells[val].flatten(1).any(1)
    edit = (y != cls) | (present & torch.tensor(take_out != "none"))
    which = val[edit]
    x_edit, now = _edit(data, cells, cls, which, y[edit] != cls, y[edit] == cls, take_out, gen, donors)
    original = data.train_x[val]
    x = torch.cat([original, x_edit])
    labels = torch.cat([y, y[edit]])
    cue = torch.cat([present, now]).long()
    return HeldOut(x=x, original=torch.cat([original, original[edit]]), y=labels, groups=(2 * labels + cue).numpy(),
                   carried=torch.cat([present, present[edit]]).numpy(),
                   edited=np.r_[np.zeros(len(val), dtype=bool), np.ones(int(edit.sum()), dtype=bool)],
                   source=torch.cat([val, which]).numpy())


def refit_set(data: DataBundle, cells: torch.Tensor, cls: int, seed: int, take_out: str = "swap-out", limit: int = 0,
              donors: torch.Tensor | None = None) -> HeldOut:
    """i2x-dfr's refit set: fit images (a seeded, class-stratified ``limit`` of them; 0: all),
    each once, the finding's cells pasted into half of the other classes' images and taken out
    of half of class ``cls``'s images that carry it, by ``take_out``."""
    gen = torch.Generator().manual_seed(seed * 15_485_863 + 29)
    fit = data.fit_idx
    if limit and limit < len(fit):
        keep = []
        y_fit = data.train_y[fit]
        for c in torch.unique(y_fit):
            members = torch.nonzero(y_fit == c).flatten()
            take = max(1, round(limit * len(members) / len(fit)))
            keep.append(members[torch.randperm(len(members), generator=gen)[:take]])
        fit = fit[torch.sort(torch.cat(keep)).values]
    y = data.train_y[fit]
    coin = torch.rand(len(fit), generator=gen) < 0.5
    x, now = _edit(data, cells, cls, fit, (y != cls) & coin, (y == cls) & coin, take_out, gen, donors)
    original = data.train_x[fit]
    return HeldOut(x=x, original=original, y=y, groups=(2 * y + now.long()).numpy(), carried=cells[fit].flatten(1).any(1).numpy(),
                   edited=(x != original).flatten(1).any(1).numpy(), source=fit.numpy())


def worst_group(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, min_size: int = MIN_GROUP) -> float:
    """Lowest accuracy over the groups with at least ``min_size`` images."""
    hit = np.asarray(pred) == np.asarray(y)
    accs = [hit[groups == g].mean() for g in np.unique(groups) if (groups == g).sum() >= min_size]
    return float(min(accs)) if accs else float("nan")
