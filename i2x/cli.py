"""The ``i2x`` command: one subcommand per stage; MLproject entry points call it too.

Each command is thin: parse, resolve the config, open the MLflow run, call the stage
functions, log. User mistakes print ``i2x: error: <one line>`` and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from i2x.platform.config_io import available_configs
from i2x.platform.errors import I2XError
from i2x.platform.process import UNDER_MAIN, exit_when_done, stop_on_signals
from i2x.runs import RUNS

EXIT_USAGE = 2


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from i2x.training.data import DATASETS

    p.add_argument("--dataset", default="", help=f"one of {', '.join(sorted(DATASETS))} (default: the config's)")
    p.add_argument("--config", default="", help=f"a YAML path or one of {', '.join(available_configs())} (default: the dataset's)")
    p.add_argument("--data-dir", default="", help="local data root (default: $I2X_DATA_DIR, else ./data with download)")
    p.add_argument("--seed", type=int, default=-1, help="random seed (default: the config's)")
    p.add_argument("--overrides", default="", help="key=value,key=value, e.g. train.epochs=5,explain.n_prototypes=64")


def cmd_services(args: argparse.Namespace) -> None:
    from pathlib import Path

    from i2x.platform import services

    if args.action in ("compose", "caddyfile"):
        print(services.compose_yaml() if args.action == "compose" else services.caddyfile(), end="")
        return
    root = Path(args.root)
    if args.action == "down":
        print(f"stopped: {', '.join(services.down(root)) or 'nothing was running'}")
        return
    stack = services.local_stack(root, args.backend_store_uri, args.study_storage, args.s3_port, args.mlflow_port, args.dashboard_port)
    if args.action == "status":
        for name, state in services.status(root, stack).items():
            print(f"{name:10s} {state}")
        return
    urls = services.up(root, stack)
    print(f"S3 (SeaweedFS):   {urls['s3']}  bucket '{services.BUCKET}'")
    print(f"MLflow server:    {urls['mlflow']}  (artifacts proxied to s3://{services.BUCKET}/{services.MLFLOW_PREFIX})")
    print(f"optuna-dashboard: {urls['dashboard']}")
    print(f"\nexport MLFLOW_TRACKING_URI={urls['mlflow']}")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on the study storage. Its Optuna schema is created first: before any
    study the dashboard died on the empty SQLite file it had itself created ("no such table:
    version_info"), and left that 0-byte file behind."""
    from i2x.platform import services
    from i2x.platform.secrets import redact
    from i2x.tuning.study import resolve_storage, storage_for

    url = resolve_storage(args.storage)
    storage = storage_for(url, 30)  # creates the schema; a storage that cannot be opened is one line
    if hasattr(storage, "engine"):
        storage.engine.dispose()
    print(f"i2x dashboard: optuna-dashboard on {redact(url)} at http://{args.host}:{args.port}/ (studies appear once tune "
          "acts on a finding; Ctrl-C to stop)", flush=True)
    command = [services._bin("optuna-dashboard"), *services.dashboard_args(url.removeprefix("journal:"), args.host, args.port)]
    os.execv(command[0], command)  # the dashboard takes over this process (and its Ctrl-C)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i2x",
        description="I2X: structured explanations of image classifiers from their training history.",
    )
    parser.add_argument("--version", action="version", version=f"i2x {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, what: str, examples: list[str]) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".",
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("train", "train a classifier with dense-early checkpoints (tracked in MLflow)",
                ["i2x train --dataset mnist", "i2x train --dataset cifar10 --overrides train.epochs=5"])
    _add_run_args(p)
    p = command("explain", "Grad-CAM at every checkpoint, prototypes, and the I2X explanation",
                ["i2x explain --run-id TRAIN_RUN_ID", "i2x explain --run-id models:/mnist-cnn/1", "i2x explain --checkpoints mlruns/i2x-work/train-mnist-cnn-<hash>"])
    _add_run_args(p)
    p.add_argument("--run-id", default="", help="the training run to explain: its MLflow run id, or its model's models:/<name>/<version> URI")
    p.add_argument("--checkpoints", default="", help="or: a local folder of ckpt-*.pt files of one run")
    p = command("main", "train, then explain, then tune (what `mlflow run .` does)",
                ["i2x main --dataset mnist", "mlflow run . -P dataset=cifar10 --env-manager local"])
    _add_run_args(p)
    p = command("tune", "I2X-guided fine-tuning: an Optuna study, controls and a test-set summary",
                ["i2x tune --run-id EXPLAIN_RUN_ID", "I2X_OPTUNA_STORAGE=postgresql://... i2x tune --worker --study NAME"])
    _add_run_args(p)
    p.add_argument("--run-id", default="", help="the explain run to act on: its MLflow run id, or the models:/ URI of the trained model (its newest explain run)")
    p.add_argument("--study", default="", help="study name (default: tune.study_name, else i2x-<dataset>-<hash of the explanation and tune config>, so a rerun resumes it)")
    p.add_argument("--storage", default="", help="Optuna storage URL: sqlite:///..., postgresql://..., journal:<path> (default: tune.storage, else $I2X_OPTUNA_STORAGE, else sqlite:///mlruns/optuna.db); put URLs with a password in $I2X_OPTUNA_STORAGE")
    p.add_argument("--worker", action="store_true", help="join the running study --study on --storage and run trials")
    p = command("report", "regenerate the HTML report of an explain or tune run",
                ["i2x report --run-id EXPLAIN_RUN_ID", "i2x report --run-id TUNE_RUN_ID --out /tmp/report"])
    p.add_argument("--run-id", default="", help="the explain or tune run")
    p.add_argument("--out", default="", help="write the report into this folder instead of logging it to the run")
    p = command("doctor", "check the invariants of the tracking store, a study storage and a work folder (read-only unless --repair)",
                ["i2x doctor", "i2x doctor --storage sqlite:///mlruns/optuna.db --work mlruns/i2x-work --verify", "i2x doctor --repair"])
    p.add_argument("--storage", default="", help="also check the RUNNING trials of every study of this Optuna storage (default: $I2X_OPTUNA_STORAGE)")
    p.add_argument("--work", default="", help="also check that every checkpoint under this work folder is whole")
    p.add_argument("--verify", action="store_true", help="download every recorded artifact and compare its SHA-256 (not only its size)")
    p.add_argument("--repair", action="store_true", help="end what no process can end any more: runs RUNNING without a live holder "
                                                          "or under an ended parent become KILLED, such trials FAIL (the only writes doctor makes)")
    p = command("dashboard", "optuna-dashboard on the study storage, ready before any study exists",
                ["i2x dashboard", "i2x dashboard --storage sqlite:///mlruns/optuna.db --port 8080"])
    p.add_argument("--storage", default="", help="Optuna storage URL (default: $I2X_OPTUNA_STORAGE, else sqlite:///mlruns/optuna.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p = command("services", "the local stack without docker: S3 (SeaweedFS), MLflow server, optuna-dashboard",
                ["i2x services up", "i2x services status", "i2x services down"])
    p.add_argument("action", choices=["up", "down", "status", "compose", "caddyfile"],
                   help="compose prints docker/docker-compose.yml, caddyfile docker/Caddyfile")
    p.add_argument("--root", default="mlruns/stack", help="folder for the services' data and logs")
    p.add_argument("--backend-store-uri", default="", help="MLflow backend (default SQLite under --root; a postgresql:// URL works)")
    p.add_argument("--study-storage", default="", help="Optuna storage for the dashboard (default SQLite under --root)")
    p.add_argument("--s3-port", type=int, default=8333)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--dashboard-port", type=int, default=8080)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("i2x")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _end_launched_run() -> bool:
    """``mlflow run`` made this process's run (``MLFLOW_RUN_ID``); a stop before the stage
    adopted it left it RUNNING, and the launcher would mark it FAILED: it was stopped. True
    when this ended it."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return False
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
            return True
    except Exception:  # noqa: BLE001 (best effort on the way out; the next holder closes it otherwise)
        pass
    return False


def _stopped(exc: KeyboardInterrupt, under_main: bool) -> int:
    """A stop (:class:`~i2x.platform.process.Stopped`, or SIGINT's KeyboardInterrupt): the
    launched run ended KILLED, one line that says what was done (a stage of `i2x main`: main
    says it, once), 128 + n. Only a command that held a run says it marked one KILLED."""
    signum = getattr(exc, "signum", signal.SIGINT)
    ended = _end_launched_run()
    held = ended or bool(sys.modules.get("i2x.platform.tracking") and sys.modules["i2x.platform.tracking"].KILLED_RUNS)
    if not under_main:
        name = signal.Signals(signum).name
        print(f"i2x: stopped by {name}; the MLflow run is marked KILLED; run the same command again to resume" if held else
              f"i2x: stopped by {name}; no MLflow run was open, so none was changed", file=sys.stderr)
    return 128 + int(signum)


def main(argv: Sequence[str] | None = None) -> int:
    under_main = bool(os.environ.get(UNDER_MAIN))  # read first: `i2x main` sets it for its stages
    try:
        # first: a stop while the tracking store is checked (seconds: MLflow's imports) is a stop too, not Python's
        # KeyboardInterrupt traceback or a silent death by SIGTERM
        with stop_on_signals():
            return _command(build_parser(), argv)
    except I2XError as exc:
        print(f"i2x: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # process.Stopped: SIGTERM or SIGINT; the stage's run is ended KILLED
        return _stopped(exc, under_main)
    except Exception as exc:  # a full disk, a read-only folder: the operator's to fix, one line
        from i2x.platform.errors import os_error_message

        line = os_error_message(exc)
        if line is None:
            raise
        print(f"i2x: error: {line}", file=sys.stderr)
        return EXIT_USAGE


def _command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    if args.command in RUNS or args.command == "doctor":
        from i2x.platform.store_checks import check_tracking_uri
        from i2x.platform.tracking import DEFAULT_TRACKING_URI

        check_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)
    if args.command in RUNS:
        module, function = RUNS[args.command]
        from i2x.platform.progress import heartbeat

        with heartbeat(args.command):
            getattr(importlib.import_module(module), function)(args)
    elif args.command == "services":
        cmd_services(args)
    elif args.command == "dashboard":
        return cmd_dashboard(args)
    elif args.command == "doctor":
        from i2x.runs.doctor import doctor_run

        args.storage = args.storage or os.environ.get("I2X_OPTUNA_STORAGE", "")
        return doctor_run(args)
    else:
        parser.print_help()
        return EXIT_USAGE
    return 0


def run(argv: Sequence[str] | None = None) -> None:
    """The program (``i2x``, ``python -m i2x.cli``, the MLproject shims): ``main``, then exit
    with its code; a stop that lands after the command is done changes nothing."""
    try:
        done = exit_when_done()
    except KeyboardInterrupt as exc:  # the stop landed while its handlers were being set (CI saw it: exit 1, a traceback)
        sys.exit(_stopped(exc, bool(os.environ.get(UNDER_MAIN))))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, a usage error
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    done(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
