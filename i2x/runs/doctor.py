"""``i2x doctor``: the invariants of a tracking store, an Optuna study storage and a work folder,
checked in one pass (issue 23). Read-only unless ``--repair``: it reports, it creates no store,
folder or table, and it never crashes: a store it cannot open is one line and exit 2; an
artifact store that does not answer makes its checks "cannot tell".

1. **holders**: no run is RUNNING without a live holder, the process its ``i2x.holder`` tag
   names (host, pid, start time: a reused pid does not count). A holder on another host
   cannot be seen from here: such a run is listed as unverifiable, not as a violation.
2. **children**: no run is RUNNING after its parent run ended.
3. **artifacts**: every FINISHED i2x run has its manifest (``i2x-manifest.json``, written as
   the run finishes), and every artifact in it is stored at its recorded size (``verify``:
   and its SHA-256, which downloads every file).
4. **trials**: no Optuna trial is RUNNING without a live worker (its ``i2x.holder`` attribute,
   else the storage's heartbeat).
5. **checkpoints**: every ``ckpt-*.pt`` in the work folder is whole (its zip directory reads
   and every member's CRC matches), so a rerun resumes from a whole checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2x.platform import tracking
from i2x.platform.errors import I2XError
from i2x.platform.process import holder_alive
from i2x.platform.secrets import redact


@dataclass
class Findings:
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)
    repairable: list[tuple[str, str]] = field(default_factory=list)  # ("run", id) or ("trial", "<storage>\t<study>\t<trial id>")

    def check(self, ok: bool | None, what: str) -> None:
        """One invariant on one object: True holds, False is a violation, None cannot be told."""
        self.checks += 1
        if ok is False:
            self.violations.append(what)
        elif ok is None:
            self.unverifiable.append(what)


def check_runs(found: Findings, verify: bool = False) -> None:
    """Invariants 1-3 over every run of every experiment of the tracking store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = {r.info.run_id: r for r in client.search_runs(experiments, max_results=50_000)} if experiments else {}
    for run_id, run in runs.items():
        tags, status = run.data.tags, run.info.status
        name = f"run {run_id} ({tags.get(tracking.TAG_STAGE) or run.info.run_name})"
        if status == "RUNNING":
            held = tags.get(tracking.TAG_HOLDER)
            alive = holder_alive(held) if held else None
            found.check(alive, f"{name} is RUNNING " + ("but its holder (" + held + ") is gone" if alive is False else
                                                      f"held by {held or 'an unrecorded process'}, which cannot be seen from here"))
            parent = runs.get(tags.get(tracking.TAG_PARENT, ""))
            if parent is not None:
                found.check(parent.info.status == "RUNNING", f"{name} is RUNNING under parent {parent.info.run_id}, which ended {parent.info.status}")
            orphan = parent is not None and parent.info.status != "RUNNING" and alive is not True and not (held and alive is None)
            if alive is False or orphan:  # no process on this host can end it any more
                found.repairable.append(("run", run_id))
        elif status == "FINISHED" and tags.get(tracking.TAG_HOLDER) and tags.get(tracking.TAG_STAGE) != "tune-trial":
            _check_artifacts(found, client, run_id, name, verify)


def _check_artifacts(found: Findings, client: Any, run_id: str, name: str, verify: bool) -> None:
    import mlflow

    try:
        stored = _sizes(client, run_id)
    except Exception as exc:  # noqa: BLE001 (an S3 store that is down, a credential that is wrong: not this run's fault)
        found.check(None, f"{name}: its artifacts cannot be listed ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})")
        return
    if tracking.MANIFEST not in stored:
        found.check(False, f"{name} is FINISHED without {tracking.MANIFEST}: it did not record what it logged")
        return
    try:
        manifest = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{tracking.MANIFEST}"))
        if not isinstance(manifest, dict):
            raise ValueError("not a mapping")
    except ValueError as exc:
        found.check(False, f"{name}: {tracking.MANIFEST} is damaged ({type(exc).__name__}): what the run logged cannot be checked")
        return
    for path, entry in manifest.items():
        size = stored.get(path)
        ok = size == entry["bytes"]
        if ok and verify:
            with tempfile.TemporaryDirectory() as tmp, open(mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, dst_path=tmp), "rb") as fh:
                ok = hashlib.file_digest(fh, "sha256").hexdigest() == entry["sha256"]
        found.check(ok, f"{name}: artifact {path} " + ("is missing" if size is None else
                                                         f"has {size} bytes, recorded {entry['bytes']}" if size != entry["bytes"]
                                                         else "differs from its recorded SHA-256"))


def _sizes(client: Any, run_id: str, path: str | None = None) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            out.update(_sizes(client, run_id, info.path))
        else:
            out[info.path] = info.file_size
    return out


def check_trials(found: Findings, storage: str) -> None:
    """Invariant 4 over every study of an Optuna storage."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        stale = _stale(study)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            held = trial.user_attrs.get("i2x.holder")
            alive = holder_alive(held) if held else (False if trial._trial_id in stale else None)
            found.check(alive, f"study {summary.study_name}: trial {trial.number} is RUNNING " +
                        (f"but its worker ({held or 'heartbeat stale'}) is gone" if alive is False else "with a worker this host cannot see"))
            if alive is False:
                found.repairable.append(("trial", f"{storage}\t{summary.study_name}\t{trial._trial_id}"))


def _stale(study: Any) -> set[int]:
    storage = study._storage
    if hasattr(storage, "get_heartbeat_interval") and storage.get_heartbeat_interval():
        return set(storage._get_stale_trial_ids(study._study_id))
    return set()


def check_work(found: Findings, work: Path) -> None:
    """Invariant 5 over the checkpoints of a work folder."""
    for path in sorted(work.rglob("ckpt-*.pt")):
        try:
            with zipfile.ZipFile(path) as archive:
                whole = archive.testzip() is None
        except (OSError, zipfile.BadZipFile):
            whole = False
        found.check(whole, f"checkpoint {path} is not a whole file")


def doctor(store_checks: bool = True, storage: str = "", work: Path | None = None, verify: bool = False) -> Findings:
    found = Findings()
    if store_checks:
        uri = tracking.configure(create=False)
        try:
            check_runs(found, verify)
        except I2XError:
            raise
        except Exception as exc:  # noqa: BLE001 (a server or database that refuses: one line, exit 2)
            raise I2XError(f"cannot read the tracking store {redact(uri)}: {_first_line(exc)}; check that it is up and reachable") from None
    if storage:
        existing_storage(storage)
        try:
            check_trials(found, storage)
        except Exception as exc:  # noqa: BLE001
            raise I2XError(f"cannot read the Optuna storage {redact(storage)}: {_first_line(exc)}") from None
    if work is not None:
        check_work(found, work)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else type(exc).__name__).strip()


def existing_storage(url: str) -> None:
    """Refuse (one line) an Optuna storage that holds no study tables, without creating any:
    Optuna's own opening creates the file and the tables, and doctor only reads."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        if not path.is_file():
            raise I2XError(f"no Optuna journal at {path}; give --storage the storage that tune used (doctor creates nothing)")
        return
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise I2XError(f"no Optuna storage at {path}: the file does not exist; give --storage the storage that tune used "
                           "(doctor creates nothing)")
    from sqlalchemy import create_engine, inspect

    try:
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 (a refused connection, an unknown driver, not a database)
        raise I2XError(f"cannot read the Optuna storage {redact(url)}: {_first_line(exc)}") from None
    if "studies" not in tables:
        raise I2XError(f"{redact(url)} holds no Optuna study tables; give --storage the storage that tune used (doctor creates nothing)")


def repair(found: Findings) -> list[str]:
    """End what no process can end any more (``--repair``): a run RUNNING without a live holder,
    or under a parent that ended, becomes KILLED (tagged ``i2x.closed_by: doctor``); a trial
    RUNNING without a live worker becomes FAIL (Optuna retries it when the study runs again).
    Returns one line per repair."""
    done = []
    for kind, what in found.repairable:
        if kind == "run":
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            client.set_tag(what, "i2x.closed_by", "doctor")
            client.set_terminated(what, status="KILLED")
            done.append(f"REPAIRED  run {what}: RUNNING -> KILLED")
        else:
            import optuna
            from optuna.trial import TrialState

            storage, study, trial_id = what.split("\t")
            optuna.load_study(study_name=study, storage=storage)._storage.set_trial_state_values(int(trial_id), state=TrialState.FAIL)
            done.append(f"REPAIRED  study {study}: trial id {trial_id} RUNNING -> FAIL")
    return done


def doctor_run(args: argparse.Namespace) -> int:
    """Print every violation and what could not be told; exit 1 when an invariant is broken
    (after ``--repair``: when one is left)."""
    work = Path(args.work) if args.work else None
    if work is not None and not work.is_dir():
        raise I2XError(f"--work {work} is not a folder; give the work folder of the runs (default mlruns/i2x-work)")
    found = doctor(True, args.storage, work, args.verify)
    if getattr(args, "repair", False) and found.repairable:
        for line in repair(found):
            print(line)
        found = doctor(True, args.storage, work, args.verify)
    for line in found.violations:
        print(f"VIOLATION  {line}")
    for line in found.unverifiable:
        print(f"cannot tell  {line}")
    where = ", ".join(filter(None, [redact(tracking.configure(create=False)), args.storage and redact(args.storage), work and str(work)]))
    print(f"i2x doctor: {found.checks} checks over {where}: {len(found.violations)} violation(s), {len(found.unverifiable)} not verifiable here")
    return 1 if found.violations else 0
