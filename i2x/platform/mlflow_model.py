"""The trained model as an MLflow Model (issue 24): logged with ``mlflow.pytorch`` beside the
checkpoints, with a signature, an input example and the class names, optionally registered,
so that ``mlflow.pyfunc.load_model``, ``mlflow models serve`` and the model registry work, and
``mlflow.pytorch.load_model`` gives back the ``nn.Module`` (``.eval()``, fine-tuning).

MLflow 3 saves a PyTorch model with ``torch.export`` by default (``pt2``): what it loads is an
exported graph, which has no ``.eval()`` (NotImplementedError) and cannot be trained further.
i2x asks for the pickled module, with the i2x source that defines its classes carried inside
the model (``code_paths``), so that a serving environment without i2x installed loads it.

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
    from pathlib import Path

    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    import i2x

    model = model.cpu().eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, logits)
    # Requirements given, not inferred: MLflow's inference imports the model in a subprocess.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pyyaml"]
    with uploading(f"{name} (MLflow Model)"):
        info = mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=example,
                                        pip_requirements=requirements, metadata={"classes": list(classes)},
                                        registered_model_name=register_as or None, serialization_format="pickle",
                                        code_paths=[str(Path(i2x.__file__).parent)])
    return str(info.model_uri)


def load_pyfunc(uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` of a ``models:/`` or ``runs:/`` URI."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def run_of_model(uri: str) -> str:
    """The id of the run that logged the model ``uri``: ``models:/<name>/<version>``,
    ``models:/<name>/latest``, ``models:/<name>@<alias>`` or ``models:/m-<logged model id>``;
    a one-line error when the registry does not hold it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from i2x.platform.errors import I2XError
    from i2x.platform.secrets import redact
    from i2x.platform.tracking import configure

    store = redact(configure())
    rest = uri[len("models:/"):].strip("/") if uri.startswith("models:/") else ""
    name, _, version = rest.partition("/")
    name, _, alias = name.partition("@")
    fix = "use models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest or the models:/m-... URI a run printed"
    if not name or "/" in version or (alias and version):
        raise I2XError(f"'{uri}' is not a model URI this command reads: {fix}")
    client = MlflowClient()
    try:
        if alias:
            return str(client.get_model_version_by_alias(name, alias).run_id)
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise I2XError(f"registered model '{name}' has no version in {store}; train with train.register_as={name} first")
            return str(max(versions, key=lambda v: int(v.version)).run_id)
        if version:
            return str(client.get_model_version(name, version).run_id)
        if name.startswith("m-"):
            return str(client.get_logged_model(name).source_run_id)
    except MlflowException:
        raise I2XError(f"no model '{uri}' in {store}: check it on the MLflow UI's Models page ({fix})") from None
    raise I2XError(f"'{uri}' names no version: {fix}")
