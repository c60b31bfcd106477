"""The Optuna study over targeted perturbation and fine-tuning, with honest controls.

No MLflow here: :mod:`i2x.runs.tune` passes a ``track`` hook that opens a nested run per
trial. A study lives in any Optuna storage, so workers on other processes or machines
join it by name (``i2x tune --worker``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optuna.exceptions import ExperimentalWarning

from i2x.explanation.prototypes import Prototypes
from i2x.platform.config import Config
from i2x.platform.errors import I2XError
from i2x.platform.process import holder, holder_alive, interruptible, uninterrupted
from i2x.platform.progress import doing, steps
from i2x.platform.secrets import has_secret, redact
from i2x.training.batches import to_float
from i2x.training.data import DataBundle
from i2x.training.models import target_module
from i2x.tuning.finetune import EpochFn, finetune
from i2x.tuning.perturbation import Plan
from i2x.tuning.trial_log import QuietStops, TrialLines

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
STORAGE_ENV = "I2X_OPTUNA_STORAGE"  # a URL with a password belongs here, not on a command line

warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeat & retry are stable in practice
TrackFn = Callable[[Any, Plan], contextlib.AbstractContextManager[EpochFn]]
METRIC_NAMES = ("val_accuracy", "focal_pair_val_confusions")


@dataclass
class TuneContext:
    """What every trial needs. ``state`` is the final checkpoint's weights.

    Attributes:
        scores: the explanation's ``scores`` rows (every prototype's u_k and class pair).
        background: background prototypes (never random-target draws).
        focal: the focal pair ``(a, b)``, a < b: of the scored prototypes' pairs, the one the
            final model confuses most on the validation split (set by :func:`focus`).
    """

    config: Config
    data: DataBundle
    build: Callable[[], torch.nn.Module]
    state: dict[str, torch.Tensor]
    assignment: torch.Tensor
    scores: list[dict[str, Any]]
    device: torch.device
    background: list[int] = field(default_factory=list)
    focal: tuple[int, int] | None = None
    protos: Prototypes | None = None
    target_layer: str = ""

    def fresh_model(self) -> torch.nn.Module:
        model = self.build()
        model.load_state_dict(self.state)
        return model.to(self.device)

    def class_index(self, name: str) -> int:
        return self.data.classes.index(name)


@torch.no_grad()
def assign_images(model: torch.nn.Module, layer: str, images: torch.Tensor, protos: Prototypes, batch_size: int, device: torch.device) -> torch.Tensor:
    """Nearest prototype of every grid cell of every image: one batched forward pass.

    Returns:
        ``(N, h, w)`` int16 prototype ids.
    """
    module = target_module(model, layer)
    store: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out.detach()))
    out = []
    model.eval()
    try:
        for start in steps(range(0, len(images), batch_size), "prototype of every image cell", unit="batch"):
            model(to_float(images[start : start + batch_size]).to(device))
            ids, _ = protos.assign(store["a"].float().cpu())
            out.append(torch.from_numpy(ids.astype(np.int16)))
    finally:
        handle.remove()
    return torch.cat(out)


def target_prototypes(scores: list[dict[str, Any]], n: int, threshold: float, pair: tuple[str, str] | None = None) -> tuple[int, ...]:
    """The ``n`` most uncertain prototypes with score >= ``threshold`` (ties by id); with
    ``pair``, only those whose class pair is that pair."""
    ranked = sorted((s for s in scores if s["score"] >= threshold and (pair is None or set(s["pair"]) == set(pair))),
                    key=lambda s: (-s["score"], s["prototype"]))
    return tuple(int(s["prototype"]) for s in ranked[:n])


def pair_of(ctx: TuneContext, k: int) -> tuple[int, int]:
    """The class pair ``(a, b)``, a < b, of prototype k."""
    row = next(s for s in ctx.scores if s["prototype"] == k)
    a, b = sorted(ctx.class_index(c) for c in row["pair"])
    return a, b


def target_pairs(ctx: TuneContext, targets: tuple[int, ...]) -> list[tuple[int, int]]:
    """The class pairs of the targets (each once, most uncertain first)."""
    pairs: list[tuple[int, int]] = []
    for k in targets:
        if pair_of(ctx, k) not in pairs:
            pairs.append(pair_of(ctx, k))
    return pairs


def make_plan(ctx: TuneContext, kind: str, alpha: float, targets: tuple[int, ...], e1: int, e2: int, lr: float,
              epoch_samples: int | None = None) -> Plan:
    """A plan whose scope follows ``tune.curation`` (each target's pair, or every class)."""
    t = ctx.config.tune
    scope = tuple(pair_of(ctx, k) for k in targets) if t.curation == "pair" else ()
    return Plan(kind, alpha, targets, e1, e2, lr, scope, t.epoch_samples if epoch_samples is None else epoch_samples)


def _val_preds(model: torch.nn.Module, ctx: TuneContext) -> torch.Tensor:
    x = ctx.data.train_x[ctx.data.val_idx]
    model.eval()
    with torch.no_grad():
        return torch.cat([model(to_float(x[s : s + 1000]).to(ctx.device)).argmax(1).cpu() for s in range(0, len(x), 1000)])


def _confusions(y: torch.Tensor, preds: torch.Tensor, a: int, b: int) -> int:
    return int((((y == a) & (preds == b)) | ((y == b) & (preds == a))).sum())


def focus(ctx: TuneContext) -> TuneContext:
    """Set ``ctx.focal``: of the pairs of prototypes scored at least ``tune.threshold_min``,
    the one the final model confuses most on the validation split (ties: the most uncertain
    prototype's). Chosen before the study, on validation data: the test set plays no part.

    Raises:
        I2XError: no prototype reaches ``tune.threshold_min`` (nothing to target).
    """
    candidates = target_prototypes(ctx.scores, len(ctx.scores), ctx.config.tune.threshold_min)
    if not candidates:
        top = max((s["score"] for s in ctx.scores), default=0.0)
        raise I2XError(f"no prototype has an uncertainty score >= tune.threshold_min={ctx.config.tune.threshold_min} (largest: "
                       f"{top:.3f}); lower tune.threshold_min or explain a model that has uncertain prototypes")
    y = ctx.data.train_y[ctx.data.val_idx]
    preds = _val_preds(ctx.fresh_model(), ctx)
    pairs = target_pairs(ctx, candidates)
    ctx.focal = max(pairs, key=lambda p: (_confusions(y, preds, *p), -pairs.index(p)))
    return ctx


def suggest_plan(trial: Any, ctx: TuneContext) -> Plan:
    """The search space: target mode, kind, alpha, n targets, threshold (up to the largest
    observed u_k, so that a target always exists), lr (log), epochs per phase."""
    t = ctx.config.tune
    top = max(s["score"] for s in ctx.scores)
    mode = trial.suggest_categorical("target_mode", list(t.target_modes))
    kind = trial.suggest_categorical("kind", list(t.kinds))
    alpha = trial.suggest_float("alpha", 0.0, 1.0)
    n = trial.suggest_int("n_targets", 1, max(1, t.max_targets))
    threshold = trial.suggest_float("threshold", t.threshold_min, max(t.threshold_min, min(t.threshold_max, top)))
    lr = trial.suggest_float("lr", t.lr_min, t.lr_max, log=True)
    e1 = trial.suggest_categorical("epochs_perturbed", list(t.epochs_choices))
    e2 = trial.suggest_categorical("epochs_full", list(t.epochs_choices))
    return plan_from_params({"target_mode": mode, "kind": kind, "alpha": alpha, "n_targets": n, "threshold": threshold, "lr": lr,
                             "epochs_perturbed": e1, "epochs_full": e2}, ctx)


def plan_from_params(params: dict[str, Any], ctx: TuneContext) -> Plan:
    """The plan of a trial's parameters (``target_mode`` defaults to ``prototypes``)."""
    pair = None
    if params.get("target_mode", "prototypes") == "pair" and ctx.focal is not None:
        pair = (ctx.data.classes[ctx.focal[0]], ctx.data.classes[ctx.focal[1]])
    targets = target_prototypes(ctx.scores, params["n_targets"], params["threshold"], pair)
    return make_plan(ctx, params["kind"], params["alpha"], targets, params["epochs_perturbed"], params["epochs_full"], params["lr"])


def make_objective(ctx: TuneContext, track: TrackFn | None = None) -> Callable[[Any], Any]:
    """Objective: validation accuracy after fine-tuning by the trial's plan (and, with
    ``tune.second_objective``, the focal pair's validation confusions). The test set is
    never touched here. A trial without a target is pruned."""
    import optuna

    two = ctx.config.tune.second_objective
    if ctx.focal is None:
        focus(ctx)

    def objective(trial: optuna.Trial) -> Any:
        plan = suggest_plan(trial, ctx)
        trial.set_user_attr("targets", list(plan.targets))
        if not plan.targets:  # e.g. pair mode above every focal-pair prototype's score: never a silent no-op
            raise optuna.TrialPruned(f"no target: no prototype of the chosen mode scores >= {trial.params['threshold']:.3f}")
        model = ctx.fresh_model()
        seed = ctx.config.seed
        doing(f"trial {trial.number + 1}: fine-tuning ({plan.kind} on {len(plan.targets)} targets)")

        def report(epoch: int, acc: float) -> None:
            if not two:  # Optuna cannot prune multi-objective studies
                trial.report(acc, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} at val accuracy {acc:.4f}")

        with (track(trial, plan) if track else contextlib.nullcontext(None)) as log_epoch:
            def on_epoch(epoch: int, acc: float) -> None:
                if log_epoch:
                    log_epoch(epoch, acc)
                report(epoch, acc)

            result = finetune(model, ctx.data, ctx.assignment, plan, ctx.config, seed, ctx.device, on_epoch)
            for key in ("n_affected", "n_dropped", "n_added", "class_counts", "epoch_fraction"):
                trial.set_user_attr(key, result.stats[key])
            if two:
                y = ctx.data.train_y[ctx.data.val_idx]
                return result.history[-1], _confusions(y, _val_preds(model, ctx), *ctx.focal)
            return result.history[-1]

    return objective


def storage_for(url: str, heartbeat_s: int) -> Any:
    """An Optuna storage: RDB (sqlite/postgresql/mysql) with heartbeat and retry of failed
    trials, or ``journal:<path>`` for several processes on one host."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = url or resolve_storage()
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except (ImportError, optuna.exceptions.StorageInternalError, Exception) as exc:  # bad URL, server down, driver missing
        raise I2XError(f"cannot open Optuna storage {redact(url)}: {str(exc).splitlines()[0][:160]}") from None


def resolve_storage(url: str = "") -> str:
    """``url`` (``--storage`` or ``tune.storage``), else ``$I2X_OPTUNA_STORAGE``, else the
    SQLite file under ``mlruns/``. A password is taken from the environment only: in a
    flag it shows in ``ps``, in the config it would be copied into params, checkpoints,
    the explanation and the study's attributes."""
    import os

    if has_secret(url):
        raise I2XError(f"the storage URL {redact(url)} holds a password; pass it in ${STORAGE_ENV} (read from the environment "
                       "only), not in --storage, tune.storage or --overrides")
    return url or os.environ.get(STORAGE_ENV, "") or DEFAULT_STORAGE


def open_study(name: str, url: str, config: Config, objectives: dict[str, str] | None = None) -> Any:
    """Create or load (``load_if_exists``) the seeded TPE study with a median pruner;
    ``objectives`` (metric name -> direction) replaces the candidate study's."""
    import optuna

    directions = ["maximize", "minimize"] if config.tune.second_objective else ["maximize"]
    names = list(METRIC_NAMES[: len(directions)])
    if objectives:
        names, directions = list(objectives), list(objectives.values())
    study = optuna.create_study(
        study_name=name,
        storage=storage_for(url, config.tune.heartbeat_s),
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=config.tune.startup_trials),
        directions=directions,
        load_if_exists=True,
    )
    study.set_metric_names(names)  # the dashboard's axes, instead of "Objective 0"
    return study


def run_study(study: Any, ctx: Any, track: Any = None, objective: Callable[[Any], Any] | None = None) -> None:
    """Optimise until the study holds ``tune.n_trials`` finished (complete or pruned) trials,
    counting every worker's. ``objective`` replaces the candidate study's (``ctx`` is then
    whatever context it closes over, with a ``config``)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimize_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, QuietStops) for f in optimize_log.filters):
        optimize_log.addFilter(QuietStops())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # a worker on this host that is gone (SIGKILL, a crash) cannot end its trial; its heartbeat may not be stale
        # yet when the rerun starts (seconds later), and the trial would stay RUNNING under a finished study
        held = trial.user_attrs.get("i2x.holder")
        if held and holder_alive(held) is False:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    if hasattr(study._storage, "get_heartbeat_interval") and study._storage.get_heartbeat_interval():
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAIL, then retried
    n = ctx.config.tune.n_trials
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if done >= n:
        return
    inner = objective or make_objective(ctx, track)

    def held(trial: Any) -> Any:  # the worker that runs the trial, for `i2x doctor`
        trial.set_user_attr("i2x.holder", holder())
        with interruptible():
            return inner(trial)

    # A stop lands only inside a trial's objective, which Optuna ends FAIL (the holder is set by then); one
    # between Optuna creating a trial and calling the objective, or while it writes a trial's end, left that
    # trial RUNNING with no holder, under a study the rerun then finished (CI hit it). There it waits, and
    # lands in the next objective or once the study returns.
    with uninterrupted():
        study.optimize(held, n_trials=n - done,
                       callbacks=[MaxTrialsCallback(n, states=(TrialState.COMPLETE, TrialState.PRUNED)), TrialLines(n, METRIC_NAMES)],
                       gc_after_trial=True, show_progress_bar=False)


def best_trial(study: Any) -> Any:
    """The trial the ``tuned`` strategy uses."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise I2XError(f"study '{study.study_name}' has no completed trial; raise tune.n_trials or lower tune.startup_trials")
    # Highest validation accuracy; among equal accuracies, fewest focal-pair confusions (the
    # second objective), so the pick is on the Pareto front; then the earliest trial.
    return max(complete, key=lambda t: (t.values[0], -t.values[1] if len(t.values) > 1 else 0.0, -t.number))


def upload_study_artifacts(study: Any, url: str, files: list[Path]) -> list[str]:
    """Attach files to the study in ``s3://<bucket>`` via Optuna's Boto3ArtifactStore."""
    import os

    import boto3
    from optuna.artifacts import Boto3ArtifactStore, upload_artifact

    if not url.startswith("s3://"):
        raise I2XError(f"tune.artifact_store must be s3://<bucket>, got '{url}'")
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    store = Boto3ArtifactStore(bucket, client=client)
    ids = []
    for path in files:
        try:
            ids.append(upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study))
        except Exception as exc:  # botocore errors: store down, bad credentials, no bucket
            raise I2XError(f"uploading {path.name} to the Optuna artifact store {url} failed ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:160]}); local files are kept in {path.parent}") from None
    return ids
