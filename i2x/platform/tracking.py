"""Everything that talks to MLflow lives here; the algorithm never imports mlflow.

Tracking URI: ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///mlruns/mlflow.db``
(MLflow 3 refuses a plain ``./mlruns`` file store); artifacts then go under ``mlruns/``.
Under ``mlflow run`` the launcher already created the run and passes ``MLFLOW_RUN_ID``,
which :func:`open_run` adopts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from i2x.platform import orphans
from i2x.platform.errors import I2XError, os_error_message
from i2x.platform.orphans import TAG_HOLDER, TAG_PARENT, TAG_WORK_DIR  # noqa: F401 (the run tags, read here and by callers)
from i2x.platform.process import (
    Stopped,
    folder_lock,
    git_commit,
    holder,
    probe_write,
    quiet_timer,
    stop_on_signals,
    uninterrupted,
)
from i2x.platform.secrets import redact

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
KILLED_RUNS: list[str] = []  # the runs this process ended KILLED on a stop: what its stop line may say it did
DEFAULT_EXPERIMENT = "i2x"

# Tag keys, one place.
TAG_STAGE = "i2x.stage"
TAG_DATASET = "i2x.dataset"
TAG_MODEL = "i2x.model"
TAG_COMMIT = "mlflow.source.git.commit"
TAG_TRAIN_RUN = "i2x.train_run_id"
TAG_RESUMED_FROM = "i2x.resumed_from_step"
TAG_HEADLINE = "i2x.headline"  # explain: the verified findings in one line
TAG_VERDICT = "i2x.verdict"  # tune: tuned vs full->full in one line
TAG_REPORT = "i2x.report"  # the stage's local report/index.html


# boto3 >= 1.36 sends CRC checksum headers some S3 servers reject; send them only when
# required. Retries are bounded so an outage ends in an error, not a hang.
_S3_ENV_DEFAULTS = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    "AWS_MAX_ATTEMPTS": "3",
    "AWS_RETRY_MODE": "standard",
    # MLflow's per-file download bars are debris in a redirected log.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# MLflow 3.17's UI picks its view from the URL's ``workflowType`` (else the browser's last
# choice, GenAI by default, which opens an experiment on the traces "Overview"), so every URL
# i2x prints asks for the runs table. The experiment is also tagged as model development, which
# the UI reads when that switch is off.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
RUNS_VIEW = "workflowType=machine_learning"
TAG_DESCRIPTION = "mlflow.note.content"  # the run page's description


def configure(create: bool = True) -> str:
    """Set the tracking URI (env wins) and the S3 client defaults; return the URI. ``create``
    makes a relative SQLite store's folder; without it (``i2x doctor``, which only reads) a
    SQLite store that does not exist is one line."""
    import mlflow

    for key, value in _S3_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not create and not path.is_file():
            raise I2XError(f"no tracking store at {path}: the file does not exist; set MLFLOW_TRACKING_URI to the store the runs "
                           "used (doctor creates nothing)")
        if create and not uri.startswith("sqlite:////"):
            path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def init_store() -> str:
    """Create a SQLite tracking store's tables once, under a file lock, and return the URI.

    MLflow creates them on first use with alembic; two processes doing that at once on a
    new file fail ("Online migration expected to match one row", ``_alembic_tmp_tags``) and
    can leave the store unusable. Every i2x stage calls this before touching the store, and
    ``make run`` calls it before ``mlflow run``, whose launcher would otherwise race.
    """
    import mlflow

    uri = configure()
    if not uri.startswith("sqlite:///"):
        return uri
    db = Path(uri.removeprefix("sqlite:///") if not uri.startswith("sqlite:////") else "/" + uri.removeprefix("sqlite:////"))
    with folder_lock(db):
        try:
            mlflow.MlflowClient().search_experiments(max_results=1)
            probe_write(db)
        except Exception as exc:  # sqlalchemy's OperationalError arrives as itself or wrapped in MlflowException
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if "locked" in reason or "readonly" in reason or "unable to open" in reason:
                raise I2XError(f"the tracking store {redact(uri)} cannot be used ({reason}); another process holds it, or it is "
                               "not writable: wait, fix its permissions, or set MLFLOW_TRACKING_URI to another store") from exc
            raise
    return uri


_LOCAL_FILES: list[Path] = []  # the stage's local output folder, named in upload errors


@contextlib.contextmanager
def open_run(run_name: str, tags: dict[str, str], nested: bool = False, local: Path | None = None) -> Iterator[Any]:
    """Start (or adopt ``MLFLOW_RUN_ID``) a run named ``run_name``; mark it FAILED if an exception escapes.

    A run adopted from ``mlflow run`` is renamed too (the launcher gives a random name),
    and the experiment is marked so that the MLflow UI opens on its runs table.

    The experiment is ``$MLFLOW_EXPERIMENT_NAME`` / ``$MLFLOW_EXPERIMENT_ID`` when set
    (``mlflow run`` sets the id), else ``i2x``. ``local`` is the folder where the stage
    keeps its outputs; an upload error says that they are kept there.
    """
    import mlflow

    with contextlib.ExitStack() as stack:
        if local is not None:
            _LOCAL_FILES[:] = [local]
            stack.enter_context(folder_lock(local))
            tags = {**tags, TAG_WORK_DIR: str(local)}
        # handlers first: a stop between start_run and the work (renaming, tagging, closing
        # stale runs: seconds on a slow store) used to kill the process with its run RUNNING
        pending = stack.enter_context(stop_on_signals())
        run = None
        try:
            init_store()
            if not os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("MLFLOW_EXPERIMENT_ID") and not nested:
                mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
            run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") and not nested else run_name, nested=nested)
            client = mlflow.MlflowClient()
            if run.info.run_name != run_name:
                client.update_run(run.info.run_id, name=run_name)
            mark_experiment(run.info.experiment_id)
            mlflow.set_tags({k: redact(str(v)) for k, v in {**tags, TAG_COMMIT: tags.get(TAG_COMMIT, git_commit()), TAG_HOLDER: holder()}.items()})
            if local is not None:
                orphans.close_stale(local, run.info.run_id)
            orphans.close_orphans(run.info.run_id)
            yield run
            quiet_timer()
            if pending:  # the stop landed where Python swallows exceptions, and the work then ended
                raise Stopped(pending[0])
            _log_manifest(run.info.run_id, always=True)  # last: a run with a manifest logged everything in it
        except KeyboardInterrupt:  # SIGTERM or SIGINT (see Stopped)
            quiet_timer()
            if run is not None:  # ours is the active run (a nested one ends before its parent)
                mlflow.end_run(status="KILLED")
                KILLED_RUNS.append(run.info.run_id)
            raise
        except BaseException:
            if run is not None:
                mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")


def mark_experiment(experiment_id: str) -> None:
    """Tag the experiment as model development (once), so the UI opens on the runs."""
    import mlflow

    client = mlflow.MlflowClient()
    key, value = EXPERIMENT_KIND
    if client.get_experiment(experiment_id).tags.get(key) != value:
        client.set_experiment_tag(experiment_id, key, value)


def readable(value: float) -> float:
    """6 significant digits: 0.9942000110944113 (a float32 artefact) is logged as 0.9942."""
    return float(f"{value:.6g}")


def log_params(params: dict[str, Any]) -> None:
    """Log params; values are stringified, lists joined, passwords in URLs masked, and
    MLflow's 6000-char cap respected."""
    import mlflow

    clean = {k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}
    mlflow.log_params({k: redact(str(v))[:6000] for k, v in clean.items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: readable(float(v)) for k, v in metrics.items()}, step=step)


@contextlib.contextmanager
def uploading(what: str, local: Path | None = None) -> Iterator[None]:
    """Turn an artifact-store failure (S3 down, bad credentials) into one actionable line."""
    from mlflow.exceptions import MlflowException

    upload_errors: tuple[type[BaseException], ...] = (MlflowException, OSError)
    try:
        import boto3.exceptions
        import botocore.exceptions

        upload_errors += (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)
    except ImportError:
        pass
    try:
        yield
    except upload_errors as exc:
        import mlflow

        run = mlflow.active_run()
        where = run.info.artifact_uri if run else "the artifact store"
        text = " ".join(str(exc).split())
        code = re.search(r"An error occurred \((\w+)\)", text)
        first = code.group(1) if code else (text[:160] or type(exc).__name__)
        folder = _LOCAL_FILES[0] if _LOCAL_FILES else local
        kept = f"; local files are kept in {folder}" if folder else ""
        if disk := os_error_message(exc, where.removeprefix("file://")):  # a full or read-only disk under a local artifact store: say so, not "credentials"
            raise I2XError(f"uploading {what} failed" + (f" (local files are kept in {folder})" if folder else "") + f": {disk}") from None
        raise I2XError(f"uploading {what} to {where} failed ({type(exc).__name__}: {first}){kept}; "
                       "fix the store or its credentials and re-run the same command: finished stages are not redone") from None


MANIFEST = "i2x-manifest.json"  # artifact path -> {"bytes", "sha256"} of what the run logged, written as it FINISHES
_MANIFESTS: dict[str, dict[str, dict[str, Any]]] = {}


def _record(run_id: str, artifact: str, data: bytes | Path) -> None:
    """Note an uploaded artifact's size and SHA-256 (a file is hashed as a stream, not read whole)."""
    if isinstance(data, Path):
        with data.open("rb") as fh:
            digest, size = hashlib.file_digest(fh, "sha256").hexdigest(), data.stat().st_size
    else:
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
    _MANIFESTS.setdefault(run_id, {})[artifact] = {"bytes": size, "sha256": digest}


def _log_manifest(run_id: str, merge: bool = False, always: bool = False) -> None:
    """Write the run's manifest (``merge``: onto the one it already has, for a finished run;
    ``always``: also when it logged nothing, so that a missing manifest means a lost one)."""
    from mlflow.tracking import MlflowClient

    entries = _MANIFESTS.pop(run_id, {})
    if not entries and not merge and not always:
        return
    if merge and MANIFEST in list_artifacts(run_id):
        import mlflow

        entries = {**json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{MANIFEST}")), **entries}
    with uploading(MANIFEST):
        MlflowClient().log_dict(run_id, dict(sorted(entries.items())), MANIFEST)


def _artifact_name(path: Path, artifact_path: str | None) -> str:
    return f"{artifact_path or ''}/{Path(path).name}".lstrip("/")


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Log a file; an upload failure becomes a one-line :class:`I2XError`. S3 writes an
    object under its final key only once the upload is complete, so a failure never
    leaves a partial artifact that looks whole."""
    import mlflow

    name = _artifact_name(path, artifact_path)
    with uploading(name, Path(path).parent):
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    _record(mlflow.active_run().info.run_id, name, Path(path))


def log_artifacts_to(run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
    """Log files into a given (possibly finished) run, not the active one; its manifest is
    updated once, after the last."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for path in paths:
        name = _artifact_name(path, artifact_path)
        with uploading(name, Path(path).parent):
            client.log_artifact(run_id, str(path), artifact_path)
        _record(run_id, name, Path(path))
    _log_manifest(run_id, merge=True)


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    clean = redact(text)
    with uploading(artifact_file):
        mlflow.log_text(clean, artifact_file)
    _record(mlflow.active_run().info.run_id, artifact_file, clean.encode())


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags({k: redact(str(v)) for k, v in tags.items()})


def describe_run(tag: str, said: str, report: Path, description: str) -> None:
    """The active run's one-line result (``tag``: headline or verdict), the path of its local
    report and the description the MLflow UI shows on the run's page."""
    set_tags({tag: said, TAG_REPORT: str(report.resolve()), TAG_DESCRIPTION: description})


def get_run(run_id: str) -> Any:
    """The run, or a one-line error when the id does not exist in this tracking store."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = configure()
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise I2XError(f"MLflow run '{run_id}' does not exist in {uri}; check the id in the MLflow UI or set MLFLOW_TRACKING_URI") from None


def where_to_look(experiment_id: str, run_id: str = "") -> tuple[str, str]:
    """``(how to open the MLflow UI, the URL of the experiment's runs table, or of one run)``
    for this tracking URI."""
    uri = configure()
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + f"?{RUNS_VIEW}"
    if uri.startswith(("http://", "https://")):
        return "the tracking server is already up", f"{uri.rstrip('/')}/{page}"
    return (f"mlflow ui --backend-store-uri {redact(uri)} --host 127.0.0.1 --port 5000   (or: make ui)",
            f"http://127.0.0.1:5000/{page}")


def download_artifacts(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download a run's artifact (file or folder) into ``dst``; returns the local path."""
    from mlflow.artifacts import download_artifacts as _download
    from mlflow.exceptions import MlflowException

    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(_download(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)))
    except MlflowException as exc:
        raise I2XError(f"could not download '{artifact_path}' of run {run_id} ({str(exc).splitlines()[0][:160]}); "
                       "check that the run made it and that the artifact store is reachable") from None
    except Exception as exc:  # botocore errors: store down, bad credentials
        raise I2XError(f"could not download '{artifact_path}' of run {run_id} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]}); check the artifact store and its credentials") from None


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def run_entry_point(project: Path, entry_point: str, parameters: dict[str, Any]) -> str:
    """Run another entry point of this project as a child of the active run; returns its id.

    ``env_manager="local"`` is explicit: this process already runs in the project's
    environment, and an inner run without it builds a fresh one (MLflow #11849, #6611). Waited
    for here, not by MLflow: its wait marks the child FAILED after a stop even when the child
    ended KILLED (``_maybe_set_run_terminated`` compares the status string with integer codes).
    A child that was stopped stops this run too; one that failed is an error.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    submitted = None
    try:
        # A stop inside this call (it creates the child's run, then starts its process) used to leave the child's run
        # RUNNING with no process and no handle to end it; held back (:func:`uninterrupted`), it lands in wait() below
        with uninterrupted():
            submitted = mlflow.projects.run(str(project), entry_point=entry_point, parameters=parameters, env_manager="local",
                                            synchronous=False)
        ok = submitted.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C (one process group), or SIGTERM now: it ends its run KILLED
        if submitted is not None:
            submitted.cancel()
            if client.get_run(submitted.run_id).info.status == "RUNNING":
                client.set_terminated(submitted.run_id, status="KILLED")
        raise
    if ok:
        return str(submitted.run_id)
    status, code = client.get_run(submitted.run_id).info.status, submitted.command_proc.returncode
    if status == "RUNNING":
        client.set_terminated(submitted.run_id, status="FAILED")
    if status == "KILLED" and code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise Stopped(code - 128)
    raise I2XError(f"stage '{entry_point}' failed (run {submitted.run_id} exited {code}); its error is printed above")
