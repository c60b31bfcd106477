"""Step 1 of the method: data in, a checkpointed training history out.

Takes a data set (torchvision, an ImageFolder tree or the planted synthetic set) and a model
from the registry; gives ``T`` self-describing checkpoints (weights, optimizer state, step,
metrics, resolved config), dense early and sparse late.

- :mod:`~i2x.training.synthetic`: a data set with planted answers (a mark, a confuser);
- :mod:`~i2x.training.data`: the ``DATASETS`` registry, loading and the splits;
- :mod:`~i2x.training.batches`: float batches, augmentation, the flip schedule;
- :mod:`~i2x.training.pixels`: pixel operations on grid cells (masks, blur), shared by the
  causal check and the perturbations above;
- :mod:`~i2x.training.models`: the ``MODELS`` registry and target layers;
- :mod:`~i2x.training.checkpoints`: the schedule, writing and safe loading
  (``weights_only=True``), consistency checks;
- :mod:`~i2x.training.loop`: :func:`train`, resumable and bit-identical on resume.
"""
