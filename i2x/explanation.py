"""The explanation document: one JSON with a versioned schema (``i2x/schema/``).

Floats are rounded to 6 significant digits and keys sorted, so the same seed and
inputs give a byte-identical document apart from the fields listed in
``timestamp_fields``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from i2x.errors import I2XError
from i2x.patterns import NOISE, GroupFit
from i2x.prototypes import Prototypes
from i2x.structure import Structure

SCHEMA_VERSION = "1.0"
SCHEMA_ID = f"i2x.explanation/{SCHEMA_VERSION}"
TIMESTAMP_FIELDS = ("created_at",)


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("i2x.schema").joinpath(f"explanation-{SCHEMA_VERSION}.json").read_text())


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
    top_beta: int = 5,
) -> dict[str, Any]:
    """Assemble the explanation. ``run`` and ``config`` are copied in as given.

    Args:
        checkpoints: ``[{"step", "epoch", "val_accuracy"}]`` in order, T entries.
        analysis_index: ``(N,)`` dataset index of each analysis sample.
        groups: ``(T-1, N)`` HDBSCAN labels.
    """
    name = classes.__getitem__
    roles: dict[int, dict[str, list[str]]] = {k: {"shared": [], "specialised": []} for k in range(protos.k)}
    for c, ks in structure.shared.items():
        for k in ks:
            roles[k]["shared"].append(name(c))
    for c, specs in structure.specialised.items():
        for s in specs:
            roles[s.prototype]["specialised"].append(name(c))
    uncertain_ids = {s.prototype for s in structure.uncertain}
    prototypes = []
    for k in range(protos.k):
        prototypes.append({
            "id": k,
            "coverage": {name(c): _r(protos.coverage[k, c]) for c in range(len(classes))},
            "n_locations": int((protos.assignment == k).sum()),
            "n_samples": int(protos.presence[:, k].sum()),
            "exemplars": [
                {"sample": e.sample, "dataset_index": int(analysis_index[e.sample]), "cell": list(e.cell), "box": list(e.box), "distance": _r(e.distance)}
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
            "shared": [{"prototype": k, "evidence": _r(structure.evidence[k, c]), "coverage": _r(protos.coverage[k, c])} for k in structure.shared[c]],
            "specialised": [
                {"prototype": s.prototype, "evidence": _r(structure.evidence[s.prototype, c]), "coverage": _r(protos.coverage[s.prototype, c]),
                 "group_coverage": _r(s.group_coverage), "interval": s.interval, "group": s.group, "beta": _r(s.beta)}
                for s in structure.specialised[c]
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

    scored = [(f.r2, len(f.members)) for f in fits if f.r2 is not None]
    mean_r2 = sum(r * n for r, n in scored) / sum(n for _, n in scored) if scored else None
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
        "scores": [score_row(s) for s in structure.scores],
        "uncertain": [score_row(s) for s in structure.uncertain],
        "metrics": {
            "mean_r2_heldout": _r(mean_r2),
            "n_uncertain": len(structure.uncertain),
            "noise_share": _r(noise),
            "n_prototypes": protos.k,
            "n_samples": int(len(labels)),
        },
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
