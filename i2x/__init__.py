"""i2x: Interpretability to Explainability.

Structured explanations of image classifiers from their training history (method:
``docs/method.md``). The folders follow the data, and imports run one way, down this list
(``tests/test_layout.py``)::

    cli                 the command line: dispatches to a run
    runs/               one MLflow run per stage (train, explain, tune, report, main),
                        the config resolver, the artifact contract, the time plan
    reporting/          figures and the HTML report
    tuning/             step 8: targeted perturbation, fine-tuning, the Optuna study, controls
    explanation/        steps 2-7b: Grad-CAM, prototypes, intensity, patterns, labels, the null,
                        the causal check, the explanation document
    training/           step 1: data sets, batches, models, checkpointed training
    platform/           config, errors, progress, processes, MLflow (tracking, the store
                        plugin), credentials, services

The algorithm folders (training, explanation, tuning) are plain functions on arrays; MLflow
lives only in :mod:`i2x.platform.tracking` and the runs.
"""

from __future__ import annotations

import importlib
from typing import Any

# The public API, imported on first use (PEP 562): ``import i2x.platform.mlflow_store``, which MLflow
# does in every process of this environment through its store plugin, must not pull in
# torch and the whole package.
_EXPORTS = {
    "Analysis": "explanation.analysis", "analyse": "explanation.analysis",
    "CAM_METHODS": "explanation.cam_methods", "saliency_pass": "explanation.cam_methods",
    "Config": "platform.config", "DataConfig": "platform.config", "ExplainConfig": "platform.config", "FaithfulnessConfig": "platform.config",
    "ModelConfig": "platform.config", "TrainConfig": "platform.config", "TuneConfig": "platform.config",
    "load_config": "platform.config_io",
    "DATASETS": "training.data", "DataBundle": "training.data", "load_data": "training.data",
    "I2XError": "platform.errors",
    "document_of": "explanation.document",
    "Claim": "explanation.faithfulness", "deletion_test": "explanation.faithfulness", "road_scores": "explanation.road",
    "MODELS": "training.models", "build_model": "training.models",
    "grad_cam": "explanation.saliency",
    "train": "training.loop",
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
