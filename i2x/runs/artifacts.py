"""The artifact contract of an explain run, written and read in one place.

``out/explanation/explanation.json`` (the document), ``out/prototypes/prototypes.json`` and
``centers.npz`` (PCA and K-Means centres, which tune reads back), ``out/saliency/maps.npz``
(maps, probabilities, intensities, presence, assignment, groups, labels, steps, images,
interval betas), ``out/saliency/ckpt-<step:08d>.png`` (overlays) and
``out/prototypes/gallery*.png``. Written atomically, file by file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2x.explanation.prototypes import Prototypes
from i2x.platform.config import Config

# The contract's paths, relative to an explain (or tune) run's artifact root.
EXPLANATION = "explanation/explanation.json"
PROTOTYPES = "prototypes/prototypes.json"
CENTERS = "prototypes/centers.npz"
MAPS = "saliency/maps.npz"
TUNE_SUMMARY = "tuning/summary.json"


def _json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``, or one line that says the file is damaged and ``fix``."""
    from i2x.platform.errors import I2XError

    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise I2XError(f"{Path(path).name} of this run is damaged ({type(exc).__name__}: {str(exc)[:120]}); {fix}") from None
    if not isinstance(value, dict):
        raise I2XError(f"{Path(path).name} of this run is damaged (a JSON {type(value).__name__}, not an object); {fix}")
    return value


def fetch_evaluation(train_run_id: str | None, dst: Path) -> Path | None:
    """The training run's ``evaluation/`` folder, downloaded into ``dst`` (None without one)."""
    from i2x.platform import tracking

    if not train_run_id:
        return None
    names = [n for n in tracking.list_artifacts(train_run_id, "evaluation") if Path(n).name.endswith((".json", ".png"))]
    for name in names:
        tracking.download_artifacts(train_run_id, name, dst)  # a file lands as dst/<name's last part>
    return dst if names else None


def read_explanation(path: Path) -> dict[str, Any]:
    """The explanation document at ``path`` (a downloaded :data:`EXPLANATION`), checked
    against its schema: a damaged or foreign document is one line, before anything opens."""
    from i2x.explanation.document import validate
    from i2x.platform.errors import I2XError

    fix = "rerun i2x explain on its training run to write it again"
    doc = _json(path, fix)
    try:
        validate(doc)
    except I2XError as exc:
        raise I2XError(f"{exc}; {fix}") from None
    return doc


def read_tune_summary(path: Path) -> dict[str, Any]:
    """A tune run's strategies, controls and verdicts (a downloaded :data:`TUNE_SUMMARY`)."""
    from i2x.platform.errors import I2XError

    fix = "rerun i2x tune on its explain run (it resumes) to write it again"
    summary = _json(path, fix)
    whole = "strategies" in summary if summary.get("act_on") != "findings" or summary.get("finding") else "said" in summary
    if not whole:
        raise I2XError(f"{Path(path).name} of this run is damaged (no strategies or verdict in it); {fix}")
    return summary


def read_maps(path: Path) -> dict[str, np.ndarray]:
    """Every array of a downloaded :data:`MAPS`, loaded into memory."""
    with np.load(path) as npz:
        return dict(npz)


def read_prototypes(path: Path) -> Prototypes:
    """The PCA and K-Means centres of a downloaded :data:`CENTERS`: enough to assign new
    feature maps to the explain run's prototypes (tune does)."""
    with np.load(path) as z:
        return Prototypes(z["pca_mean"], z["pca_components"], z["centers"], np.empty(0), np.empty(0), np.empty(0), np.empty(0), [])


def overlay_samples(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A fixed, seeded set of analysis positions, ``per_class`` per class, class by class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.extend(sorted(rng.choice(members, size=min(per_class, len(members)), replace=False)))
    return np.asarray(chosen, dtype=np.int64)


def write_explain_outputs(out: Path, doc: dict[str, Any], text: str, analysis: Any, images: torch.Tensor, labels: torch.Tensor,
                          classes: list[str] | tuple[str, ...], infos: list[dict[str, Any]], config: Config) -> None:
    """Write every explain artifact into ``out/{explanation,saliency,prototypes}``."""
    from i2x.explanation.saliency import upsample
    from i2x.reporting.figures import gallery_pages, plot_gallery, plot_overlays
    from i2x.training.checkpoints import atomic_path, atomic_write_text

    for sub in ("explanation", "saliency", "prototypes"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EXPLANATION, text)
    atomic_write_text(out / PROTOTYPES, json.dumps(doc["prototypes"], indent=2, sort_keys=True))
    with atomic_path(out / MAPS) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            maps=analysis.maps.numpy().astype(np.float16),
            probs=analysis.probs.numpy().astype(np.float32),
            intensities=analysis.intensities.p.astype(np.float16),
            presence=analysis.intensities.presence,
            assignment=analysis.protos.assignment.astype(np.int16),
            groups=analysis.groups.astype(np.int16),
            labels=labels.numpy().astype(np.int16),
            steps=np.asarray([c["step"] for c in infos], dtype=np.int64),
            images=images.numpy(),
            interval_beta=analysis.structure.interval_beta.astype(np.float32),
        )
    with atomic_path(out / CENTERS) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, pca_mean=analysis.protos.pca_mean, pca_components=analysis.protos.pca_components, centers=analysis.protos.centers)

    y = labels.numpy()
    chosen = overlay_samples(y, config.explain.overlay_per_class, config.seed)
    size = tuple(images.shape[-2:])
    for t, info in enumerate(infos):
        heat = upsample(analysis.maps[t, chosen], size).numpy()
        conf = analysis.probs[t, chosen, y[chosen]].numpy()
        plot_overlays(images[chosen].numpy(), heat, y[chosen], conf, classes,
                      f"Grad-CAM at checkpoint {t} (step {info['step']}, epoch {info['epoch']:.2f})",
                      out / "saliency" / f"ckpt-{info['step']:08d}.png", per_class=config.explain.overlay_per_class)

    pages = gallery_pages(doc["prototypes"])
    for i, page in enumerate(pages):
        name = "gallery.png" if i == 0 else f"gallery-{i + 1}.png"
        plot_gallery(images.numpy(), page, classes, f"Prototypes (page {i + 1}/{len(pages)})", out / "prototypes" / name)


def resolve_run(ref: str, stage: str) -> str:
    """The run id a stage reads from ``ref``: a run id as it is, or a ``models:/`` URI of a
    trained model (``stage`` 'train': the run that logged it; 'explain': the newest FINISHED
    explain run of that training run). A one-line error when there is none."""
    from i2x.platform import tracking
    from i2x.platform.errors import I2XError
    from i2x.platform.mlflow_model import run_of_model

    if not ref.startswith("models:/"):
        return ref
    run = tracking.get_run(run_of_model(ref))
    logged_by = run.data.tags.get(tracking.TAG_STAGE, "")
    if logged_by != "train":
        raise I2XError(f"{ref} was logged by {logged_by or 'a non-i2x'} run {run.info.run_id}, not by an i2x training run: "
                       f"{stage} reads a trained model's checkpoints; pass the models:/ URI of the model before repair")
    if stage == "train":
        return str(run.info.run_id)
    from mlflow.tracking import MlflowClient

    explained = MlflowClient().search_runs(
        [run.info.experiment_id], f"tags.`{tracking.TAG_TRAIN_RUN}` = '{run.info.run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not explained:
        raise I2XError(f"{ref} (training run {run.info.run_id}) has no FINISHED explain run: i2x explain --run-id {ref} first")
    return str(explained[0].info.run_id)
