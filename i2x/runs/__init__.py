"""The stage runs, each the same shape: config (:func:`i2x.runs.runconfig.run_config`) -> open an
MLflow run (:func:`i2x.platform.tracking.open_run`) -> the pure stage functions -> the artifacts
(:mod:`i2x.runs.artifacts`) -> log. The CLI and the MLproject entry points call them through
:data:`RUNS`; no stage folder imports this one.

- :mod:`i2x.runs.train`: checkpoints, ``config/resolved.yaml``, ``report/training.png``;
- :mod:`i2x.runs.explain`: the explanation, saliency, prototypes and report artifacts;
- :mod:`i2x.runs.tune`: the Optuna study, its trial runs, the final evaluation and report;
- :mod:`i2x.runs.report`: a report regenerated from an explain or tune run;
- :mod:`i2x.runs.main`: ``mlflow run .``, the three stages as child runs.

Shared by the runs: :mod:`i2x.runs.runconfig` (one resolver of flags and configs),
:mod:`i2x.runs.artifacts` (the artifact contract, written and read in one place) and
:mod:`i2x.runs.plan` (the time plan printed at start).
"""

# command -> (module, function): the CLI's dispatch table
RUNS: dict[str, tuple[str, str]] = {
    "train": ("i2x.runs.train", "train_run"),
    "explain": ("i2x.runs.explain", "explain_run"),
    "tune": ("i2x.runs.tune", "tune_run"),
    "report": ("i2x.runs.report", "report_run"),
    "main": ("i2x.runs.main", "run_main"),
}
