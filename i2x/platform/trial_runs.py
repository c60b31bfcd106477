"""MLflow runs of Optuna trials: one nested run per trial, from any worker process, and the
adoption of a killed tune's trial runs by its rerun."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from i2x.platform.process import holder, quiet_timer
from i2x.platform.tracking import TAG_DESCRIPTION, TAG_HOLDER, TAG_PARENT, TAG_STAGE, readable


@contextlib.contextmanager
def trial_run(parent_run_id: str, number: int, params: dict[str, Any], outcome: Callable[[], dict[str, Any]] | None = None,
              study_name: str = "") -> Iterator[Any]:
    """A nested MLflow run for one Optuna trial (any process: the parent is given by id).

    Yields ``log_epoch(epoch, val_accuracy)``. The run ends FINISHED (also when pruned:
    MLflow has no PRUNED status, and KILLED draws a failure's red cross; the tag
    ``optuna.state=PRUNED`` says it) or FAILED. Logged by hand: optuna-integration's
    MLflowCallback is deprecated and serialises trials. ``outcome()`` gives params known only
    once the trial has trained (images affected, class counts), logged when it finishes.
    """
    import optuna
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = ""

    def log_epoch(epoch: int, acc: float) -> None:
        client.log_metric(run_id, "val_accuracy", readable(acc), step=epoch)

    try:  # a stop while the run is being made (seconds under a busy store) ends it too
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        run_id = client.create_run(experiment_id, run_name=f"trial-{number}", tags={
            TAG_PARENT: parent_run_id, TAG_STAGE: "tune-trial", "optuna.trial_number": str(number), "optuna.study_name": study_name,
            TAG_HOLDER: holder()}).info.run_id
        for key, value in params.items():
            client.log_param(run_id, key, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
        yield log_epoch
    except optuna.TrialPruned:
        client.set_tag(run_id, "optuna.state", "PRUNED")
        client.set_tag(run_id, TAG_DESCRIPTION, "Pruned by Optuna's median pruner: its validation accuracy fell below the median of earlier trials at the same epoch.")
        client.set_terminated(run_id, status="FINISHED")
        raise
    except BaseException as exc:  # a stop (SIGINT, SIGTERM: KeyboardInterrupt) ends it KILLED, like its parent
        if isinstance(exc, KeyboardInterrupt):
            quiet_timer()  # the stop's repeating timer would cut this short under a busy store, leaving the run RUNNING
        if run_id:
            client.set_tag(run_id, "optuna.state", "FAIL")
            client.set_terminated(run_id, status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    for key, value in (outcome() if outcome else {}).items():
        client.log_param(run_id, key, value if isinstance(value, (int, float, str)) else json.dumps(value, sort_keys=True)[:6000])
    client.set_tag(run_id, "optuna.state", "COMPLETE")
    client.set_terminated(run_id, status="FINISHED")


def adopt_trials(experiment_id: str, study_name: str, parent_run_id: str, states: dict[int, str]) -> int:
    """Put every trial run of ``study_name`` under ``parent_run_id`` (a rerun of a killed tune
    resumes the study, whose earlier trials sit under the abandoned parent), and end the trial
    runs of trials Optuna no longer runs as KILLED. ``states``: trial number -> Optuna state.
    Returns the number of runs moved."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    moved = 0
    for run in client.search_runs([experiment_id], f"tags.`optuna.study_name` = '{study_name}'"):
        if run.data.tags.get(TAG_STAGE) != "tune-trial":
            continue
        if run.data.tags.get(TAG_PARENT) != parent_run_id:
            client.set_tag(run.info.run_id, "i2x.adopted_from", run.data.tags.get(TAG_PARENT, ""))
            client.set_tag(run.info.run_id, TAG_PARENT, parent_run_id)
            moved += 1
        number = int(run.data.tags.get("optuna.trial_number", -1))
        # a trial another worker started after ``states`` was read is not in it: its run is live
        if run.info.status == "RUNNING" and number in states and states[number] not in ("RUNNING", "WAITING"):
            client.set_tag(run.info.run_id, "optuna.state", states[number])
            client.set_terminated(run.info.run_id, status="KILLED")
    return moved
