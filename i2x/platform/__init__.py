"""The platform under every stage: settings, errors, processes, MLflow and the services.

Takes nothing from the method; every stage folder above imports from here, never the other
way round.

- :mod:`~i2x.platform.config`: the frozen dataclasses of a run's settings;
  :mod:`~i2x.platform.config_io` reads YAML files, ``key=value`` overrides and checkpoints'
  configs, and checks types and ranges;
- :mod:`~i2x.platform.errors`: :class:`I2XError`, the one-line operator error (exit 2);
- :mod:`~i2x.platform.progress`: progress lines with an ETA;
- :mod:`~i2x.platform.process`: signals, folder locks, scratch folders, the git commit;
- :mod:`~i2x.platform.secrets`: credentials from the environment, redaction;
- :mod:`~i2x.platform.tracking`: every MLflow and S3 call (runs, artifacts, the store);
- :mod:`~i2x.platform.mlflow_store`: MLflow's SQLite store built under a file lock (the
  ``mlflow.tracking_store`` plugin);
- :mod:`~i2x.platform.services`: the native and docker stacks (S3, MLflow, optuna-dashboard).
"""
