"""Runs that no process holds any more: the runs of a work folder still RUNNING while this
process holds its lock, and child runs left RUNNING under a parent that has ended. The run
that finds them ends them KILLED and tags itself as the closer."""

from __future__ import annotations

from pathlib import Path

from i2x.platform.process import holder_alive

TAG_PARENT = "mlflow.parentRunId"
TAG_WORK_DIR = "i2x.work_dir"
TAG_HOLDER = "i2x.holder"  # the process that holds a RUNNING run: host, pid, start time (process.holder)


def close_stale(folder: Path, current: str) -> list[str]:
    """Runs of this work folder still RUNNING while this process holds its lock were killed
    (SIGKILL, power loss): end them KILLED, tagged with the run that found them. Searched in
    every experiment of the store: the folder, not the experiment, is the work's identity
    (``i2x train`` and ``mlflow run`` resume the same folder from different experiments)."""
    from mlflow.tracking import MlflowClient

    if "'" in str(folder):
        return []  # not expressible in a filter string; such runs stay as they are
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    stale = client.search_runs(experiments, f"tags.`{TAG_WORK_DIR}` = '{folder}' and attributes.status = 'RUNNING'")
    closed = []
    for run in stale:
        if run.info.run_id != current:
            client.set_tag(run.info.run_id, "i2x.closed_by", current)
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def close_orphans(current: str) -> list[str]:
    """Runs left RUNNING under a parent run that has ended, by no live process on this host (the
    holder it recorded is gone, or it never recorded one: a stop between MLflow's creation of a
    child run and the start of its process, which versions before this one did not close): end
    them KILLED, tagged with the run that found them. A run held on another host is left alone."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = {r.info.run_id: r for r in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=5000)}
    closed = []
    for run_id, run in running.items():
        parent = run.data.tags.get(TAG_PARENT, "")
        if run_id == current or not parent or parent in running:
            continue
        held = run.data.tags.get(TAG_HOLDER)
        if held and holder_alive(held) is not False:
            continue
        try:
            if client.get_run(parent).info.status == "RUNNING":
                continue
        except Exception:  # noqa: BLE001 (a parent deleted from the store: the child has no holder either way)
            pass
        client.set_tag(run_id, "i2x.closed_by", current)
        client.set_terminated(run_id, status="KILLED")
        closed.append(run_id)
    return closed
