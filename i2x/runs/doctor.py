"""``i2x doctor``: the invariants of a tracking store, an Optuna study storage and a work folder,
checked in one pass (issue 23). Read-only: it reports, it never repairs.

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
from i2x.platform.process import holder_alive


@dataclass
class Findings:
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)

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
        elif status == "FINISHED" and tags.get(tracking.TAG_HOLDER) and tags.get(tracking.TAG_STAGE) != "tune-trial":
            _check_artifacts(found, client, run_id, name, verify)


def _check_artifacts(found: Findings, client: Any, run_id: str, name: str, verify: bool) -> None:
    import mlflow

    stored = _sizes(client, run_id)
    if tracking.MANIFEST not in stored:
        found.check(False, f"{name} is FINISHED without {tracking.MANIFEST}: it did not record what it logged")
        return
    manifest = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{tracking.MANIFEST}"))
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
        tracking.configure()
        check_runs(found, verify)
    if storage:
        check_trials(found, storage)
    if work is not None and work.is_dir():
        check_work(found, work)
    return found


def doctor_run(args: argparse.Namespace) -> int:
    """Print every violation and what could not be told; exit 1 when an invariant is broken."""
    from i2x.platform.secrets import redact

    work = Path(args.work) if args.work else None
    found = doctor(True, args.storage, work, args.verify)
    for line in found.violations:
        print(f"VIOLATION  {line}")
    for line in found.unverifiable:
        print(f"cannot tell  {line}")
    where = ", ".join(filter(None, [redact(tracking.configure()), args.storage and redact(args.storage), work and str(work)]))
    print(f"i2x doctor: {found.checks} checks over {where}: {len(found.violations)} violation(s), {len(found.unverifiable)} not verifiable here")
    return 1 if found.violations else 0
