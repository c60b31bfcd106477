"""Steps 2-7b of the method: checkpoints in, the structured explanation out.

Takes the checkpoints of one training run and ``N`` analysis images; gives Grad-CAM maps at
every checkpoint, prototypes of the final model, their intensities, the learning patterns,
the prototype-to-confidence regression, labels that beat a within-class permutation null and
a causal deletion check, and one JSON document with a versioned schema (``schema/``).
Pure functions on arrays: no MLflow, no files.

- :mod:`~i2x.explanation.saliency`: Grad-CAM on the target layer (step 3);
  :mod:`~i2x.explanation.cam_methods`: the ``CAM_METHODS`` registry and the batched pass;
- :mod:`~i2x.explanation.prototypes`: PCA + K-Means prototypes and their assignment (step 2);
- :mod:`~i2x.explanation.intensity`: prototype intensity ``P`` and its changes (step 4);
- :mod:`~i2x.explanation.patterns`: HDBSCAN groups and the ridge betas (steps 5-6);
- :mod:`~i2x.explanation.labels`: shared, specialised and uncertain labels (step 7);
  :mod:`~i2x.explanation.nulls`: the permutation null; :mod:`~i2x.explanation.structure`:
  labels, null and progression together;
- :mod:`~i2x.explanation.faithfulness`: the causal deletion check and ROAD (step 7b);
- :mod:`~i2x.explanation.analysis`: the pure hub of steps 2-7b;
  :mod:`~i2x.explanation.document`: the explanation document and its schema.
"""
