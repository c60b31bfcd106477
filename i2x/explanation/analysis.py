"""Steps 2-7 end to end over one training history, with no I/O and no tracking.

:func:`analyse` takes a way to load each checkpoint's model, the analysis images and
the explain config; it returns arrays and records. :mod:`i2x.runs.explain` and :mod:`i2x.runs.artifacts` do the files,
pictures and MLflow around it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from i2x.explanation.cam_methods import pass_batch, pixels, saliency_pass
from i2x.explanation.consistency import shape_consistency
from i2x.explanation.copies import Copy, find_copies
from i2x.explanation.faithfulness import Claim, DeletionResult, deletion_test
from i2x.explanation.intensity import Intensities, compute_intensities
from i2x.explanation.patterns import (
    GroupFit,
    fit_group_betas,
    heldout_summary,
    learning_groups,
    prototype_aliases,
)
from i2x.explanation.prototypes import (
    Prototypes,
    blank_cells,
    check_n_prototypes,
    content_background,
    fit_prototypes,
    off_object,
)
from i2x.explanation.rigid import rigidity
from i2x.explanation.road import RoadResult, road_scores
from i2x.explanation.saliency import grad_cam
from i2x.explanation.structure import Structure, build_structure
from i2x.explanation.transplant import TransplantResult, transplant_test
from i2x.platform.config import ExplainConfig, FaithfulnessConfig
from i2x.platform.errors import I2XError
from i2x.platform.progress import doing, steps
from i2x.training.models import Classifier

MIN_CHECKPOINTS = 3


@dataclass
class Analysis:
    """Everything the explanation is built from.

    Attributes:
        maps: ``(T, N, h, w)`` float32 grid saliency.
        probs: ``(T, N, M)`` float32 softmax confidences.
        preds: ``(T, N)`` argmax of probs.
        protos: prototypes of the final model.
        intensities: P, presence, dP, dY.
        groups: ``(T-1, N)`` HDBSCAN labels.
        fits: one ridge fit per (interval, group).
        structure: the step-7 structure.
        heldout: pooled held-out R^2 per predictor set, groups and noise apart
            (see :func:`i2x.explanation.patterns.heldout_summary`).
        deletion: the causal check of every named prototype (None when off).
        road: ROAD of the final Grad-CAM maps beside random maps (None when off).
        timings: seconds per stage.
    """

    maps: torch.Tensor
    probs: torch.Tensor
    preds: np.ndarray
    protos: Prototypes
    intensities: Intensities
    groups: np.ndarray
    fits: list[GroupFit]
    structure: Structure
    heldout: dict[str, dict[str, float | None]] = field(default_factory=dict)
    deletion: list[DeletionResult] | None = None
    road: RoadResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    transplant: list[TransplantResult] | None = None
    off_object: np.ndarray | None = None
    rigid: tuple[np.ndarray, list[str | None]] | None = None
    copies: list[Copy] | None = None
    consistent: np.ndarray | None = None  # (K,) shape consistency (:mod:`i2x.explanation.consistency`)


def claims_of(structure: Structure, coverage: np.ndarray | None = None, cfg: ExplainConfig | None = None) -> list[Claim]:
    """Every candidate label of ``structure`` as a claim to test causally: shared and
    specialised per class, then uncertain with its pair. Candidates, not only the labels that
    beat the permutation null: the null asks whether the training history singles a
    prototype out, the deletion test whether the final model uses it; the report needs both.

    With ``coverage`` ``(K, M)`` and ``cfg``, also a ``cue`` claim for every class-specific
    prototype: in at least ``cfg.cue_coverage`` of class c's images and ``cfg.distinct_ratio``
    times its coverage of any other class, neither background nor already c's candidate.
    Whether the final model relies on such a prototype does not hang on the training-history
    evidence (a planted shortcut's evidence can come out negative on a small run, and a mark
    in 20% of a class is never "shared"); the shortcut check asks the final model."""
    labels = structure.candidates
    out = [Claim(k, "shared", (c,)) for c, ks in labels.shared.items() for k in ks]
    out += [Claim(s.prototype, "specialised", (c,)) for c, ss in labels.specialised.items() for s in ss]
    out += [Claim(s.prototype, "uncertain", s.pair) for s in labels.uncertain]
    if coverage is not None and cfg is not None and coverage.shape[1] > 1:
        named = {(c.prototype, c.classes[0]) for c in out if c.role != "uncertain"}
        top = coverage.argmax(1)
        rest = np.sort(coverage, axis=1)[:, -2]
        out += [Claim(int(k), "cue", (int(top[k]),)) for k in range(coverage.shape[0])
                if coverage[k, top[k]] >= cfg.cue_coverage and coverage[k, top[k]] >= cfg.distinct_ratio * rest[k]
                and int(k) not in structure.background and (int(k), int(top[k])) not in named]
    return out


def preflight(model: Classifier, images: torch.Tensor, cfg: ExplainConfig, layer: str | None = None) -> tuple[int, int]:
    """What :func:`analyse` would refuse after minutes of work, found with one image: the
    target layer passes Grad-CAM's own checks (it exists, runs once, has a spatial grid),
    its grid is 2-D, and K fits the feature locations. Returns the grid ``(h, w)``.

    Raises:
        I2XError: a bad target layer, K too large.
    """
    target = layer or model.target_layer
    with warnings.catch_warnings():  # a layer that does not move the score is reported by the real pass
        warnings.simplefilter("ignore")
        maps = grad_cam(model, target, pixels(images[:1])).maps
    if maps.ndim != 3:
        raise I2XError(f"target layer '{target}' has a {maps.ndim - 1}-D grid; prototypes need a (B, C, h, w) layer")
    h, w = maps.shape[-2:]
    check_n_prototypes(cfg.n_prototypes, len(images), int(h), int(w))
    return int(h), int(w)


def analyse(
    n_checkpoints: int,
    load_model: Callable[[int], Classifier],
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cfg: ExplainConfig,
    seed: int,
    device: torch.device,
    layer: str | None = None,
    progress: bool = True,
    faithfulness: FaithfulnessConfig | None = None,
) -> Analysis:
    """Run the I2X analysis over ``n_checkpoints`` checkpoints (the last is the final model).

    Args:
        load_model: ``t -> model`` for checkpoint index t (loaded lazily, one at a time).
        images: ``(N, C, H, W)`` uint8 analysis images; labels: ``(N,)``.
        layer: target layer; defaults to the model's declared one.
        faithfulness: the causal check's config; None or ``enabled=False`` skips it.

    Raises:
        I2XError: fewer than 3 checkpoints, a bad target layer, K too large.
    """
    if n_checkpoints < MIN_CHECKPOINTS:
        raise I2XError(f"the run has {n_checkpoints} checkpoint(s); I2X needs at least {MIN_CHECKPOINTS} (train with more train.checkpoint_fractions or epochs)")
    timings: dict[str, float] = {}
    maps, probs = [], []
    features = None
    tick = time.perf_counter()
    batch = cfg.batch_size
    for t in steps(range(n_checkpoints), "saliency", unit="ckpt", enabled=progress):
        model = load_model(t).to(device)
        target = layer or model.target_layer
        final = t == n_checkpoints - 1
        if t == 0:  # every checkpoint has the same architecture: one measurement sizes every pass
            batch = pass_batch(model, target, images, cfg.method, cfg.batch_size, cfg.memory_mb or None, device)
        out = saliency_pass(model, target, images, labels, method=cfg.method, target=cfg.target, normalize=cfg.normalize,
                            batch_size=batch, keep_features=final, device=device)
        if final:
            features = out.features  # every method returns the plain target-layer activations
        maps.append(out.maps)
        probs.append(out.probs)
        final_model = model
    maps_t, probs_t = torch.stack(maps), torch.stack(probs)
    timings["saliency"] = time.perf_counter() - tick

    tick = time.perf_counter()
    assert features is not None
    doing("prototypes (PCA and K-Means over the final model's feature cells)")
    protos = fit_prototypes(
        features, labels, num_classes, cfg.n_prototypes, cfg.pca_components, cfg.fit_max_locations,
        cfg.n_exemplars, seed, tuple(images.shape[-2:]), cfg.kmeans_n_init, saliency=maps_t[-1].numpy(),
    )
    timings["prototypes"] = time.perf_counter() - tick

    tick = time.perf_counter()
    intens = compute_intensities(maps_t, probs_t, protos.assignment, protos.k)
    timings["intensity"] = time.perf_counter() - tick

    tick = time.perf_counter()
    doing("learning groups (HDBSCAN over the confidence changes)")
    groups = learning_groups(intens.dy, cfg.min_cluster_size, cfg.patterns_max_dim, seed, progress=progress)
    timings["patterns"] = time.perf_counter() - tick

    tick = time.perf_counter()
    y = labels.numpy()
    doing("regression of confidence changes on prototype changes, per group")
    alias = prototype_aliases(intens.presence)
    fits = fit_group_betas(intens.dp, intens.dy, groups, cfg.ridge_lambda, cfg.min_group_for_r2, seed, labels=y,
                           regression=cfg.regression, folds=cfg.r2_folds, alias=alias)
    timings["regression"] = time.perf_counter() - tick

    tick = time.perf_counter()
    preds = probs_t.argmax(2).numpy()
    blank = blank_cells(images, tuple(protos.assignment.shape[-2:]), cfg.background_blank_std)
    content = content_background(protos.assignment, blank, cfg.background_blank_share, cfg.background_ring_share)
    off = off_object(protos.assignment, y, blank, protos.coverage.argmax(1))
    rigid = rigidity(images, protos.assignment, y, protos.coverage.argmax(1))
    consistent = shape_consistency(images, protos.assignment, y, protos.coverage.argmax(1), seed=seed)
    doing("class structure and the training-history permutation null")
    structure = build_structure(fits, groups, intens.presence, protos.coverage, y, preds, cfg, dp=intens.dp, dy=intens.dy,
                                seed=seed if cfg.null_seed < 0 else cfg.null_seed, content=content, alias=alias)
    timings["structure"] = time.perf_counter() - tick

    deletion: list[DeletionResult] | None = None
    transplant: list[TransplantResult] | None = None
    road = None
    copies: list[Copy] | None = None
    if faithfulness is not None and faithfulness.enabled:
        tick = time.perf_counter()
        final_maps = maps_t[-1].numpy()
        claims = claims_of(structure, protos.coverage, cfg)
        doing("causal check: deleting each candidate's cells against matched random cells")
        deletion = deletion_test(final_model, images, labels, protos.assignment, final_maps, claims, faithfulness, seed, device, cfg.batch_size)
        doing("transplant test: pasting each candidate into other classes' images")
        transplant = transplant_test(final_model, images, labels, protos.assignment, [c for c in claims if c.role != "uncertain"],
                                     faithfulness, seed, device, batch_size=cfg.batch_size)
        doing("ROAD: Grad-CAM against random maps")
        road = road_scores(final_model, images, labels, final_maps, faithfulness, seed, device)
        timings["faithfulness"] = time.perf_counter() - tick
        if faithfulness.copies:
            tick = time.perf_counter()
            doing("rigid copies: the same pixels at one place in one class's images, pasted into other classes' images")
            copies = find_copies(final_model, images, labels, tuple(protos.assignment.shape[-2:]), faithfulness, seed, device, cfg.batch_size,
                                 off_object=cfg.shortcut_off_object)
            timings["copies"] = time.perf_counter() - tick
    return Analysis(maps_t, probs_t, preds, protos, intens, groups, fits, structure, heldout_summary(fits), deletion, road, timings,
                    transplant, off, rigid, copies, consistent)
