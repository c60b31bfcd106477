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

from i2x.analysis import Analysis, analyse
from i2x.cam_methods import CAM_METHODS, saliency_pass
from i2x.config import (
    Config,
    DataConfig,
    ExplainConfig,
    FaithfulnessConfig,
    ModelConfig,
    TrainConfig,
    TuneConfig,
)
from i2x.config_io import load_config
from i2x.data import DATASETS, DataBundle, load_data
from i2x.errors import I2XError
from i2x.explanation import document_of
from i2x.faithfulness import Claim, deletion_test, road_scores
from i2x.models import MODELS, build_model
from i2x.saliency import grad_cam
from i2x.training import train

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
