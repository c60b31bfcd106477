"""i2x: Interpretability to Explainability.

Structured explanations of image classifiers from their training history
(method: shared/I2X_METHOD.md). The algorithm stages are plain functions on arrays;
MLflow lives only in :mod:`i2x.tracking` and the stage runs. Every label the
explanation is derived in :mod:`i2x.labels`, checked against a within-class permutation
null (:mod:`i2x.nulls`) and by a causal deletion test (:mod:`i2x.faithfulness`), and
assembled in :mod:`i2x.structure`.

Module map, in the order the data flows (imports point back up this list; no cycle,
``tests/test_layout.py``)::

    config -> config_io, errors, secrets, progress, process
                                                settings and plumbing
    synthetic -> data -> batches                the data sets; float batches, augmentation
    models -> checkpoints -> training           step 1: checkpointed training
    saliency -> cam_methods -> prototypes -> intensity
                                                steps 2-4: Grad-CAM, prototypes, p_nk
    patterns -> labels, nulls -> structure      steps 5-7: groups, labels, the null
    faithfulness -> analysis -> explanation     step 7b and the document
    perturbation -> finetune -> tuning          step 8: targeted fine-tuning (Optuna)
    comparison, plan                            the controls; the time plan
    mlflow_store, tracking, artifacts           MLflow (its SQLite store under a lock), files
    viz -> viz_runs, report                     figures, HTML
    runconfig, runs.{train,explain,tune,report,main}, cli, services
                                                a stage run each; the command line
"""

from __future__ import annotations

import importlib
from typing import Any

# The public API, imported on first use (PEP 562): ``import i2x.mlflow_store``, which MLflow
# does in every process of this environment through its store plugin, must not pull in
# torch and the whole package.
_EXPORTS = {
    "Analysis": "analysis", "analyse": "analysis",
    "CAM_METHODS": "cam_methods", "saliency_pass": "cam_methods",
    "Config": "config", "DataConfig": "config", "ExplainConfig": "config", "FaithfulnessConfig": "config",
    "ModelConfig": "config", "TrainConfig": "config", "TuneConfig": "config",
    "load_config": "config_io",
    "DATASETS": "data", "DataBundle": "data", "load_data": "data",
    "I2XError": "errors",
    "document_of": "explanation",
    "Claim": "faithfulness", "deletion_test": "faithfulness", "road_scores": "faithfulness",
    "MODELS": "models", "build_model": "models",
    "grad_cam": "saliency",
    "train": "training",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"i2x.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'i2x' has no attribute {name!r}")


__all__ = [
    "CAM_METHODS",
    "DATASETS",
    "MODELS",
    "Analysis",
    "Config",
    "DataBundle",
    "DataConfig",
    "Claim",
    "ExplainConfig",
    "FaithfulnessConfig",
    "I2XError",
    "ModelConfig",
    "TrainConfig",
    "TuneConfig",
    "analyse",
    "build_model",
    "deletion_test",
    "document_of",
    "grad_cam",
    "load_config",
    "load_data",
    "road_scores",
    "saliency_pass",
    "train",
]

__version__ = "0.1.0"
