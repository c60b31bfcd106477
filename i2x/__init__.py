"""i2x: Interpretability to Explainability.

Structured explanations of image classifiers from their training history
(method: shared/I2X_METHOD.md). The algorithm stages are plain functions on arrays;
MLflow lives only in :mod:`i2x.tracking` and :mod:`i2x.workflow`.
"""

from i2x.analysis import Analysis, analyse
from i2x.config import Config, DataConfig, ExplainConfig, ModelConfig, TrainConfig, load_config
from i2x.data import DATASETS, DataBundle, load_data
from i2x.errors import I2XError
from i2x.models import MODELS, build_model
from i2x.saliency import CAM_METHODS, grad_cam, saliency_pass
from i2x.training import train

__all__ = [
    "CAM_METHODS",
    "DATASETS",
    "MODELS",
    "Analysis",
    "Config",
    "DataBundle",
    "DataConfig",
    "ExplainConfig",
    "I2XError",
    "ModelConfig",
    "TrainConfig",
    "analyse",
    "build_model",
    "grad_cam",
    "load_config",
    "load_data",
    "saliency_pass",
    "train",
]

__version__ = "0.1.0"
