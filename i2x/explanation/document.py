"""The explanation document: one JSON with a versioned schema (``i2x/schema/``).

Floats are rounded to 6 significant digits and keys sorted, so the same seed and
inputs give a byte-identical document apart from the fields listed in
``timestamp_fields``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import torch

from i2x.explanation.analysis import Analysis, analyse
from i2x.explanation.copies import Copy
from i2x.explanation.faithfulness import DeletionResult
from i2x.explanation.patterns import NOISE, PREDICTORS, GroupFit
from i2x.explanation.prototypes import Prototypes, placement
from i2x.explanation.road import RoadResult
from i2x.explanation.structure import Structure
from i2x.explanation.transplant import TransplantResult
from i2x.platform.config import Config
from i2x.platform.errors import I2XError
from i2x.training.data import DataBundle
from i2x.training.models import Classifier

SCHEMA_VERSION = "1.1"
SCHEMA_ID = f"i2x.explanation/{SCHEMA_VERSION}"
TIMESTAMP_FIELDS = ("created_at",)


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("i2x.explanation.schema").joinpath(f"explanation-{SCHEMA_VERSION}.json").read_text())


def _r(x: float | None) -> float | None:
    """Round to 6 significant digits; NaN/inf become None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def build_document(
    *,
    run: dict[str, Any],
    config: dict[str, Any],
    classes: list[str],
    checkpoints: list[dict[str, Any]],
    protos: Prototypes,
    analysis_index: np.ndarray,
    groups: np.ndarray,
    fits: list[GroupFit],
    structure: Structure,
    labels: np.ndarray,
    heldout: dict[str, dict[str, float | None]] | None = None,
    deletion: list[DeletionResult] | None = None,
    road: RoadResult | None = None,
    top_beta: int = 5,
    transplant: list[TransplantResult] | None = None,
    off_object: np.ndarray | None = None,
    rigid: tuple[np.ndarray, list[str | None]] | None = None,
    copies: list[Copy] | None = None,
    consistent: np.ndarray | None = None,
) -> dict[str, Any]:
    """Assemble the explanation. ``run`` and ``config`` are copied in as given.

    Args:
        checkpoints: ``[{"step", "epoch", "val_accuracy"}]`` in order, T entries.
        analysis_index: ``(N,)`` dataset index of each analysis sample.
        groups: ``(T-1, N)`` HDBSCAN labels.
        heldout: pooled held-out R^2 per predictor set (:func:`i2x.explanation.patterns.heldout_summary`).
        deletion / road: the causal check (:mod:`i2x.explanation.faithfulness`); None when it did not run.
    """
    name = classes.__getitem__
    verdict = {(r.claim.role, r.claim.classes, r.claim.prototype): r.verified for r in deletion or []}
    tests = {(t.role, t.cls, t.prototype): t for t in structure.null.tests} if structure.null else {}
    cands = structure.candidates

    def checks(role: str, cls: int, k: int, classes_key: tuple[int, ...]) -> dict[str, Any]:
        """The two checks of a candidate label: the permutation null and the causal deletion."""
        t = tests.get((role, cls, k))
        return {"beats_null": None if t is None else t.kept, "null_p": None if t is None else _r(t.p_adjusted),
                "verified": verdict.get((role, classes_key, k))}
    roles: dict[int, dict[str, list[str]]] = {k: {"shared": [], "specialised": []} for k in range(protos.k)}
    for c, ks in structure.shared.items():
        for k in ks:
            roles[k]["shared"].append(name(c))
    for c, specs in structure.specialised.items():
        for s in specs:
            roles[s.prototype]["specialised"].append(name(c))
    uncertain_ids = {s.prototype for s in structure.uncertain}
    background = set(structure.background)
    concentration = float(config.get("explain", {}).get("concentration_share", 0.8))
    prototypes = []
    for k in range(protos.k):
        where = placement(protos.assignment, labels, k, int(protos.coverage[k].argmax()), concentration)
        prototypes.append({
            "id": k,
            "background": k in background,
            "where": {"class": name(where.cls), "region": where.region, "share": _r(where.share), "n_images": where.n_images,
                      "off_object": None if off_object is None else _r(off_object[k]),
                      "rigid": None if rigid is None else _r(rigid[0][k]),
                      "rigid_at": None if rigid is None else rigid[1][k],
                      "consistent": None if consistent is None else _r(consistent[k])},
            "coverage": {name(c): _r(protos.coverage[k, c]) for c in range(len(classes))},
            "n_locations": int((protos.assignment == k).sum()),
            "n_samples": int(protos.presence[:, k].sum()),
            "exemplars": [
                {"sample": e.sample, "dataset_index": int(analysis_index[e.sample]), "cell": list(e.cell), "box": list(e.box),
                 "crop": list(e.crop), "distance": _r(e.distance)}
                for e in protos.exemplars[k]
            ],
            "shared_by": roles[k]["shared"],
            "specialised_for": roles[k]["specialised"],
            "uncertain": k in uncertain_ids,
        })

    by_interval: dict[int, list[GroupFit]] = {}
    for fit in fits:
        by_interval.setdefault(fit.interval, []).append(fit)
    intervals = []
    for t in range(groups.shape[0]):
        rows = []
        for fit in by_interval.get(t, []):
            member_labels = labels[fit.members]
            counts = np.bincount(member_labels, minlength=len(classes))
            flat = np.argsort(-np.abs(fit.beta), axis=None, kind="stable")[:top_beta]
            rows.append({
                "id": fit.group,
                "noise": fit.group == NOISE,
                "size": len(fit.members),
                "majority_class": name(int(counts.argmax())),
                "purity": _r(counts.max() / len(fit.members)),
                "r2_heldout": _r(fit.r2),
                "beta_top": [
                    {"prototype": int(i // fit.beta.shape[1]), "class": name(int(i % fit.beta.shape[1])), "beta": _r(fit.beta.flat[i])}
                    for i in flat
                ],
            })
        intervals.append({
            "index": t,
            "from_step": checkpoints[t]["step"],
            "to_step": checkpoints[t + 1]["step"],
            "n_groups": int(sum(1 for g in np.unique(groups[t]) if g != NOISE)),
            "noise_share": _r((groups[t] == NOISE).mean()),
            "groups": rows,
        })

    class_rows = []
    for c, cname in enumerate(classes):
        class_rows.append({
            "name": cname,
            "shared": [{"prototype": k, "evidence": _r(structure.evidence[k, c]), "coverage": _r(protos.coverage[k, c]),
                        "rise_share": None if structure.rise_share is None else _r(structure.rise_share[k, c]),
                        **checks("shared", c, k, (c,))} for k in cands.shared[c]],
            "specialised": [
                {"prototype": s.prototype, "evidence": _r(structure.evidence[s.prototype, c]), "coverage": _r(protos.coverage[s.prototype, c]),
                 "group_coverage": _r(s.group_coverage), "interval": s.interval, "group": s.group, "beta": _r(s.beta),
                 **checks("specialised", c, s.prototype, (c,))}
                for s in cands.specialised[c]
            ],
            "distinct_prototypes": structure.distinct[c],
        })

    def step_of(index: int | None) -> int | None:
        return None if index is None else checkpoints[index]["step"]

    progression = [
        {"pair": [name(p.a), name(p.b)], "confusions": p.confusions, "separated_at": p.separated_at,
         "separated_at_step": step_of(p.separated_at),
         "toward_a": [{"prototype": k, "delta": _r(v)} for k, v in p.toward_a],
         "toward_b": [{"prototype": k, "delta": _r(v)} for k, v in p.toward_b]}
        for p in structure.progression
    ]

    def score_row(s: Any) -> dict[str, Any]:
        return {"prototype": s.prototype, "pair": [name(s.pair[0]), name(s.pair[1])], "score": _r(s.score),
                "oscillation": _r(s.oscillation), "share": _r(s.share), "d": [_r(v) for v in s.d]}

    heldout = heldout or {}
    groups_r2 = heldout.get("all") or heldout.get("groups", {})  # all sample-intervals: learning groups and noise
    mean_r2 = groups_r2.get("prototypes")
    adds = [groups_r2.get(p) for p in ("prototypes+class", "class", "group_mean", "prototypes")]
    regression = {
        "mode": config.get("explain", {}).get("regression"),
        "folds": config.get("explain", {}).get("r2_folds"),
        "heldout_r2": {part: {p: _r(v.get(p)) for p in PREDICTORS} for part, v in heldout.items()},
        "prototypes_beat_class": None if None in (adds[1], adds[3]) else bool(adds[3] > adds[1]),
        "prototypes_add_to_class": None if None in (adds[0], adds[1]) else bool(adds[0] > adds[1]),
        "r2_added": None if None in (adds[0], adds[1]) else _r(adds[0] - adds[1]),
    }
    null = structure.null
    null_doc = None if null is None else {
        "n_permutations": null.n_permutations,
        "counts": {role: {k: _r(v) for k, v in c.items()} for role, c in null.counts.items()},
        "tests": [{"role": t.role, "class": None if t.cls < 0 else name(t.cls), "prototype": t.prototype, "statistic": _r(t.statistic),
                   "null_mean": _r(t.null_mean), "p": _r(t.p), "p_adjusted": _r(t.p_adjusted), "kept": t.kept} for t in null.tests],
    }
    faith = _faithfulness_doc(deletion, road, name, transplant or []) if deletion is not None else None
    if faith is not None and copies is not None:
        faith["copies"] = [{"class": name(f.cls), "window": list(f.window), "where": f.where, "box": list(f.box), "pixels": f.pixels,
                            "images": f.images, "share": _r(f.share), "others": _r(f.others), "enrichment_p": _r(f.enrichment_p),
                            "scan_tries": f.scan_tries, "scan_permutations": f.scan_permutations, "tested": f.tested, "n_pairs": f.n_pairs,
                            "flips": _r(f.flips), "control_flips": _r(f.control_flips), "push": _r(f.push),
                            "ci": [_r(f.ci[0]), _r(f.ci[1])], "p": _r(f.p), "p_adjusted": _r(f.p_adjusted), "verified": f.verified,
                            "exemplars": list(f.exemplars), "off_object": _r(f.off_object), "control": f.control,
                            "mask": None if f.mask is None else f.mask.astype(int).tolist(),
                            "reference": None if f.reference is None else np.round(f.reference, 4).tolist()} for f in copies]
    noise = float((groups == NOISE).mean())
    return {
        "schema": SCHEMA_ID,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timestamp_fields": list(TIMESTAMP_FIELDS),
        "run": run,
        "config": config,
        "classes": list(classes),
        "checkpoints": [{"index": i, **{k: (_r(v) if isinstance(v, float) else v) for k, v in c.items()}} for i, c in enumerate(checkpoints)],
        "prototypes": prototypes,
        "intervals": intervals,
        "evidence": [[_r(v) for v in row] for row in structure.evidence],
        "class_structure": class_rows,
        "progression": progression,
        "distinct_vs_separation_spearman": _r(structure.distinct_vs_separation),
        "distinct_vs_separation_p": _r(structure.distinct_vs_separation_p),
        "scores": [score_row(s) for s in structure.scores],
        "uncertain": [{**score_row(s), **checks("uncertain", -1, s.prototype, s.pair)} for s in cands.uncertain],
        "background": sorted(background),
        "background_reasons": {str(k): why for k, why in sorted(structure.background_reasons.items())},
        "aliases": structure.aliases,
        "regression": regression,
        "null": null_doc,
        "faithfulness": faith,
        "metrics": {
            "mean_r2_heldout": _r(mean_r2),
            "r2_group_mean": _r(groups_r2.get("group_mean")),
            "r2_class": _r(groups_r2.get("class")),
            "r2_prototypes_plus_class": _r(groups_r2.get("prototypes+class")),
            "r2_added": None if None in (adds[0], adds[1]) else _r(adds[0] - adds[1]),
            "n_named": faith["summary"]["n_named"] if faith else None,
            "n_verified": faith["summary"]["n_verified"] if faith else None,
            "share_verified": faith["summary"]["share_verified"] if faith else None,
            "mean_excess_effect": faith["summary"]["mean_excess"] if faith else None,
            "road_gradcam": faith["road"]["gradcam"] if faith and faith["road"] else None,
            "road_random": faith["road"]["random"] if faith and faith["road"] else None,
            "n_uncertain": len(structure.uncertain),
            "n_uncertain_candidates": len(cands.uncertain),
            "noise_share": _r(noise),
            "n_prototypes": protos.k,
            "n_samples": int(len(labels)),
        },
    }


def explain(n_checkpoints: int, load_model: Callable[[int], Classifier], infos: list[dict[str, Any]], data: DataBundle,
            config: Config, device: torch.device, *, target_layer: str, train_run_id: str | None = None,
            progress: bool = True) -> tuple[Analysis, dict[str, Any]]:
    """Steps 2-7b over a training history, and its explanation document: the one pure
    ``explain`` that the explain run, ``bench/`` and the tests call.

    Args:
        n_checkpoints, load_model: as :func:`~i2x.explanation.analysis.analyse` (the last is the final model).
        infos: per checkpoint, ``{"step", "epoch", "val_accuracy"}``.
        data: the analysis images are ``data.train_x[data.analysis_idx]``.
        target_layer: the checkpoints' declared layer, used unless ``explain.target_layer`` is set.
        train_run_id: the MLflow training run, when there is one.
    """
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    analysis = analyse(n_checkpoints, load_model, images, labels, data.num_classes, config.explain, config.seed, device,
                       layer=config.explain.target_layer or None, progress=progress, faithfulness=config.faithfulness)
    h, w = analysis.maps.shape[-2:]
    doc = document_of(
        analysis,
        run={"train_run_id": train_run_id, "dataset": config.data.name, "model": config.model.name,
             "target_layer": config.explain.target_layer or target_layer, "grid": [int(h), int(w)],
             "image_size": [int(images.shape[-2]), int(images.shape[-1])], "method": config.explain.method},
        config=config.to_dict(), classes=list(data.classes), checkpoints=infos,
        analysis_index=data.analysis_idx.numpy(), labels=labels.numpy(),
    )
    return analysis, doc


def document_of(
    analysis: Analysis,
    *,
    run: dict[str, Any],
    config: dict[str, Any],
    classes: list[str],
    checkpoints: list[dict[str, Any]],
    analysis_index: np.ndarray,
    labels: np.ndarray,
) -> dict[str, Any]:
    """The explanation document of one :class:`~i2x.explanation.analysis.Analysis` (see :func:`build_document`)."""
    return build_document(run=run, config=config, classes=classes, checkpoints=checkpoints, protos=analysis.protos,
                          analysis_index=analysis_index, groups=analysis.groups, fits=analysis.fits, structure=analysis.structure,
                          labels=labels, heldout=analysis.heldout, deletion=analysis.deletion, road=analysis.road,
                          transplant=analysis.transplant, off_object=analysis.off_object,
                          rigid=analysis.rigid, copies=analysis.copies, consistent=analysis.consistent)


def _faithfulness_doc(deletion: list[DeletionResult], road: RoadResult | None, name: Any,
                      transplant: list[TransplantResult]) -> dict[str, Any]:
    rows = [{
        "prototype": r.claim.prototype, "role": r.claim.role, "classes": [name(c) for c in r.claim.classes],
        "n_images": r.n_images, "cells_per_image": _r(r.cells_per_image), "foreground_share": _r(r.foreground_share),
        "effect": _r(r.effect), "effect_ci": [_r(r.effect_ci[0]), _r(r.effect_ci[1])], "baselines": {k: _r(v) for k, v in r.baselines.items()}, "excess": _r(r.excess),
        "ci": [_r(r.ci[0]), _r(r.ci[1])], "p": _r(r.p), "p_adjusted": _r(r.p_adjusted), "verified": r.verified,
        "gradcam_overlap": _r(r.gradcam_overlap), "beyond_gradcam": _r(r.beyond_gradcam),
        "beyond_gradcam_ci": [_r(r.beyond_gradcam_ci[0]), _r(r.beyond_gradcam_ci[1])],
        "fills": {how: {"effect": _r(f["effect"]), "excess": _r(f["excess"]), "ci": [_r(f["ci"][0]), _r(f["ci"][1])],
                        "p_adjusted": _r(f["p_adjusted"]), "verified": f["verified"]} for how, f in r.fills.items()},
    } for r in deletion]
    tested = [r for r in deletion if r.verified is not None]
    verified = [r for r in tested if r.verified]
    return {
        "deletion": rows,
        "transplant": [{"prototype": r.claim.prototype, "role": r.claim.role, "classes": [name(c) for c in r.claim.classes],
                        "n_pairs": r.n_pairs, "rise": _r(r.rise), "control": _r(r.control), "excess": _r(r.excess),
                        "ci": [_r(r.ci[0]), _r(r.ci[1])], "p": _r(r.p), "p_adjusted": _r(r.p_adjusted), "flips": _r(r.flips),
                        "control_flips": _r(r.control_flips), "sufficient": r.sufficient} for r in transplant],
        "road": None if road is None else {"n_images": road.n_images, "percentiles": list(road.percentiles), "gradcam": _r(road.gradcam),
                                           "random": _r(road.random), "gradcam_ci": [_r(v) for v in road.gradcam_ci],
                                           "random_ci": [_r(v) for v in road.random_ci]},
        "summary": {"n_named": len(deletion), "n_tested": len(tested), "n_verified": len(verified),
                    "share_verified": _r(len(verified) / len(tested)) if tested else None,
                    "mean_excess": _r(float(np.mean([r.excess for r in tested]))) if tested else None},
    }


def validate(document: dict[str, Any]) -> None:
    """Validate against the committed JSON Schema; one-line error on failure."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "<root>"
        raise I2XError(f"explanation JSON does not match schema {SCHEMA_ID} at {where}: {first.message[:200]}")


def dumps(document: dict[str, Any]) -> str:
    """Canonical text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
