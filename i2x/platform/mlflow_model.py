"""The trained model as an MLflow Model (issue 24): logged with ``mlflow.pytorch`` beside the
checkpoints, with a signature, an input example and the class names, optionally registered,
so that ``mlflow.pyfunc.load_model``, ``mlflow models serve`` and the model registry work.

The input is a float32 batch ``(B, C, H, W)`` of pixels in [0, 1] (the model normalises
inside); the output is the logits ``(B, M)``, in the order of the ``classes`` metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from i2x.platform.tracking import uploading


def log_model(model: torch.nn.Module, example: np.ndarray, classes: list[str] | tuple[str, ...], name: str = "model",
              register_as: str = "") -> str:
    """Log ``model`` into the active run; returns its ``models:/`` URI.

    Args:
        example: ``(B, C, H, W)`` float32 pixels in [0, 1], a few real images.
        register_as: a registered model name: a new version of it points at this model.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = model.cpu().eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, logits)
    # Requirements given, not inferred: MLflow's inference imports the model in a subprocess.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]
    with uploading(f"{name} (MLflow Model)"):
        info = mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=example,
                                        pip_requirements=requirements, metadata={"classes": list(classes)},
                                        registered_model_name=register_as or None)
    return str(info.model_uri)


def load_pyfunc(uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` of a ``models:/`` or ``runs:/`` URI."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)
