"""The Optuna study over targeted perturbation and fine-tuning, with honest controls.

No MLflow here: :mod:`i2x.workflow` passes a ``track`` hook that opens a nested run per
trial. A study lives in any Optuna storage, so workers on other processes or machines
join it by name (``i2x tune --worker``).
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optuna.exceptions import ExperimentalWarning
from tqdm.auto import tqdm

from i2x.config import Config
from i2x.data import DataBundle, to_float
from i2x.errors import I2XError
from i2x.finetune import EpochFn, evaluate_on_test, finetune
from i2x.models import target_module
from i2x.perturbation import Plan
from i2x.prototypes import Prototypes

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
STORAGE_ENV = "I2X_OPTUNA_STORAGE"  # a URL with a password belongs here, not on a command line

warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeat & retry are stable in practice
STRATEGIES = ("tuned", "paper", "full->full", "random-target")
TrackFn = Callable[[Any, Plan], contextlib.AbstractContextManager[EpochFn]]


@dataclass
class TuneContext:
    """What every trial needs. ``state`` is the final checkpoint's weights."""

    config: Config
    data: DataBundle
    build: Callable[[], torch.nn.Module]
    state: dict[str, torch.Tensor]
    assignment: torch.Tensor
    scores: list[dict[str, Any]]
    device: torch.device

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
        for start in tqdm(range(0, len(images), batch_size), desc="assign", unit="batch", leave=False):
            model(to_float(images[start : start + batch_size]).to(device))
            ids, _ = protos.assign(store["a"].float().cpu())
            out.append(torch.from_numpy(ids.astype(np.int16)))
    finally:
        handle.remove()
    return torch.cat(out)


def load_prototypes(path: Path) -> Prototypes:
    with np.load(path) as z:
        return Prototypes(z["pca_mean"], z["pca_components"], z["centers"], np.empty(0), np.empty(0), np.empty(0), np.empty(0), [])


def target_prototypes(scores: list[dict[str, Any]], n: int, threshold: float) -> tuple[int, ...]:
    """The ``n`` most uncertain prototypes with score >= ``threshold`` (ties by id)."""
    ranked = sorted((s for s in scores if s["score"] >= threshold), key=lambda s: (-s["score"], s["prototype"]))
    return tuple(int(s["prototype"]) for s in ranked[:n])


def target_pairs(ctx: TuneContext, targets: tuple[int, ...]) -> list[tuple[int, int]]:
    """The class pairs of the targets (each once, most uncertain first)."""
    by_id = {s["prototype"]: s for s in ctx.scores}
    pairs: list[tuple[int, int]] = []
    for k in targets:
        a, b = sorted(ctx.class_index(c) for c in by_id[k]["pair"])
        if (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def suggest_plan(trial: Any, ctx: TuneContext) -> Plan:
    """The search space: kind, alpha, n targets, threshold, lr (log), epochs per phase."""
    t = ctx.config.tune
    kind = trial.suggest_categorical("kind", list(t.kinds))
    alpha = trial.suggest_float("alpha", 0.0, 1.0)
    n = trial.suggest_int("n_targets", 1, max(1, t.max_targets))
    threshold = trial.suggest_float("threshold", t.threshold_min, t.threshold_max)
    lr = trial.suggest_float("lr", t.lr_min, t.lr_max, log=True)
    e1 = trial.suggest_categorical("epochs_perturbed", list(t.epochs_choices))
    e2 = trial.suggest_categorical("epochs_full", list(t.epochs_choices))
    return Plan(kind, alpha, target_prototypes(ctx.scores, n, threshold), e1, e2, lr)


def _val_confusions(model: torch.nn.Module, ctx: TuneContext, pairs: list[tuple[int, int]]) -> int:
    x, y = ctx.data.train_x[ctx.data.val_idx], ctx.data.train_y[ctx.data.val_idx]
    with torch.no_grad():
        preds = torch.cat([model(to_float(x[s : s + 1000]).to(ctx.device)).argmax(1).cpu() for s in range(0, len(y), 1000)])
    return int(sum((((y == a) & (preds == b)) | ((y == b) & (preds == a))).sum() for a, b in pairs))


def make_objective(ctx: TuneContext, track: TrackFn | None = None) -> Callable[[Any], Any]:
    """Objective: validation accuracy after fine-tuning by the trial's plan (and, with
    ``tune.second_objective``, the target pairs' validation confusions). The test set is
    never touched here."""
    import optuna

    two = ctx.config.tune.second_objective

    def objective(trial: optuna.Trial) -> Any:
        plan = suggest_plan(trial, ctx)
        trial.set_user_attr("targets", list(plan.targets))
        model = ctx.fresh_model()
        seed = ctx.config.seed

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

            history = finetune(model, ctx.data, ctx.assignment, plan, ctx.config, seed, ctx.device, on_epoch)
            if two:
                return history[-1], _val_confusions(model, ctx, target_pairs(ctx, plan.targets) or [(0, 1)])
            return history[-1]

    return objective


def storage_for(url: str, heartbeat_s: int) -> Any:
    """An Optuna storage: RDB (sqlite/postgresql/mysql) with heartbeat and retry of failed
    trials, or ``journal:<path>`` for several processes on one host."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = resolve_storage(url)
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
    """``url``, else ``$I2X_OPTUNA_STORAGE``, else the SQLite file under ``mlruns/``."""
    import os

    return url or os.environ.get(STORAGE_ENV, "") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """A storage URL without its password, for logs and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True) if "://" in url else url
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (journal:...): nothing to hide
        return url


def open_study(name: str, url: str, config: Config) -> Any:
    """Create or load (``load_if_exists``) the seeded TPE study with a median pruner."""
    import optuna

    directions = ["maximize", "minimize"] if config.tune.second_objective else ["maximize"]
    return optuna.create_study(
        study_name=name,
        storage=storage_for(url, config.tune.heartbeat_s),
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=config.tune.startup_trials),
        directions=directions,
        load_if_exists=True,
    )


def run_study(study: Any, ctx: TuneContext, track: TrackFn | None = None) -> None:
    """Optimise until the study holds ``tune.n_trials`` finished (complete or pruned) trials,
    counting every worker's."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if hasattr(study._storage, "get_heartbeat_interval") and study._storage.get_heartbeat_interval():
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: FAIL, then retried
    n = ctx.config.tune.n_trials
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if done >= n:
        return
    study.optimize(make_objective(ctx, track), n_trials=n - done, callbacks=[MaxTrialsCallback(n, states=(TrialState.COMPLETE, TrialState.PRUNED))],
                   gc_after_trial=True, show_progress_bar=False)


def best_trial(study: Any) -> Any:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise I2XError(f"study '{study.study_name}' has no completed trial; raise tune.n_trials or lower tune.startup_trials")
    return max(complete, key=lambda t: (t.values[0], -t.number))


def plan_from_params(params: dict[str, Any], ctx: TuneContext) -> Plan:
    return Plan(params["kind"], params["alpha"], target_prototypes(ctx.scores, params["n_targets"], params["threshold"]),
                params["epochs_perturbed"], params["epochs_full"], params["lr"])


def strategy_plans(tuned: Plan, ctx: TuneContext, uncertain_threshold: float, seed: int) -> dict[str, Plan]:
    """The tuned plan, the paper's recipe and the two controls at the same budget.

    - ``paper``: drop, alpha=1, every uncertain prototype, 1 epoch curated + 1 epoch full.
    - ``full->full``: the tuned schedule with no perturbation.
    - ``random-target``: the tuned kind, strength and schedule on as many prototypes,
      drawn (seeded) among those that are not uncertain.
    """
    uncertain = target_prototypes(ctx.scores, len(ctx.scores), uncertain_threshold)
    others = [s["prototype"] for s in ctx.scores if s["prototype"] not in uncertain]
    rng = np.random.default_rng(seed)
    n = min(len(tuned.targets), len(others))
    random_targets = tuple(sorted(int(k) for k in rng.choice(others, size=n, replace=False))) if n else ()
    paper_lr = ctx.config.tune.paper_lr or tuned.lr
    return {
        "tuned": tuned,
        "paper": Plan("drop", 1.0, uncertain, 1, 1, paper_lr),
        "full->full": Plan("none", 0.0, (), tuned.epochs_perturbed, tuned.epochs_full, tuned.lr),
        "random-target": Plan(tuned.kind, tuned.alpha, random_targets, tuned.epochs_perturbed, tuned.epochs_full, tuned.lr),
    }


def evaluate_strategies(ctx: TuneContext, plans: dict[str, Plan], seeds: int, pairs: list[tuple[int, int]],
                        cache: Path | None = None) -> dict[str, list[dict]]:
    """Fine-tune every strategy with seeds ``seed, seed+1, ...`` and evaluate on the test set.

    Each finished (strategy, seed) is saved to ``cache`` (atomically), so a re-run after a
    crash or a failed upload redoes only what is missing.
    """
    import json

    from i2x.checkpoints import atomic_write_text

    done: dict[str, dict] = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    results: dict[str, list[dict]] = {name: [] for name in plans}
    jobs = [(name, s) for s in range(seeds) for name in plans]
    for name, s in tqdm(jobs, desc="controls", unit="run"):
        seed = ctx.config.seed + s
        key = f"{name}|{seed}|{plans[name]}|{pairs}"
        if key not in done:
            model = ctx.fresh_model()
            finetune(model, ctx.data, ctx.assignment, plans[name], ctx.config, seed, ctx.device)
            report = evaluate_on_test(model, ctx.data, pairs, ctx.device)
            report["seed"] = seed
            done[key] = report
            if cache:
                atomic_write_text(cache, json.dumps(done))
        results[name].append(done[key])
    return results


def focal_pair(results: dict[str, list[dict]]) -> str:
    """Of the evaluated class pairs, the one full->full confuses most on the test set
    (ties: the first, i.e. the most uncertain target's pair); a pair with one or two
    confusions would make every percentage meaningless."""
    names = list(results["full->full"][0]["confusions"])
    return max(names, key=lambda n: (sum(r["confusions"][n] for r in results["full->full"]), -names.index(n)))


def final_evaluation(study: Any, ctx: TuneContext, cache: Path | None = None) -> dict[str, Any]:
    """After the search: the best trial, the paper's recipe and both controls, each re-run
    with ``tune.seeds`` seeds on the test set, summarised (see :func:`summarize`)."""
    best = best_trial(study)
    tuned = plan_from_params(best.params, ctx)
    plans = strategy_plans(tuned, ctx, ctx.config.explain.uncertain_threshold, ctx.config.seed)
    pairs = target_pairs(ctx, tuned.targets + plans["paper"].targets) or target_pairs(ctx, target_prototypes(ctx.scores, 1, 0.0))
    results = evaluate_strategies(ctx, plans, ctx.config.tune.seeds, pairs, cache=cache)
    return summarize(results, plans, focal_pair(results), {"number": best.number, "params": best.params, "values": best.values})


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: dict[str, list[dict]], plans: dict[str, Plan], focal: str, best: dict[str, Any]) -> dict[str, Any]:
    """Mean +- std per strategy, paired differences against full->full, and the verdict.

    A gain counts only if the tuned strategy beats *both* controls by more than each
    control's seed-to-seed standard deviation, on test accuracy.
    """
    rows: dict[str, Any] = {}
    base = results["full->full"]
    for name, runs in results.items():
        acc = [r["accuracy"] for r in runs]
        foc = [r["confusions"].get(focal, 0) for r in runs]
        d_acc = [a["accuracy"] - b["accuracy"] for a, b in zip(runs, base, strict=True)]
        d_foc = [a["confusions"].get(focal, 0) - b["confusions"].get(focal, 0) for a, b in zip(runs, base, strict=True)]
        plan = asdict(plans[name])
        plan["targets"] = list(plan["targets"])
        rows[name] = {
            "plan": plan, "seeds": [r["seed"] for r in runs], "accuracy": acc, "focal_confusions": foc,
            "confusions": [r["confusions"] for r in runs],
            "accuracy_mean": _mean_std(acc)[0], "accuracy_std": _mean_std(acc)[1],
            "focal_mean": _mean_std(foc)[0], "focal_std": _mean_std(foc)[1],
            "paired_accuracy_diff_mean": _mean_std(d_acc)[0], "paired_accuracy_diff_std": _mean_std(d_acc)[1],
            "paired_focal_diff_mean": _mean_std(d_foc)[0], "paired_focal_diff_std": _mean_std(d_foc)[1],
        }
    tuned = rows["tuned"]
    beats = {c: tuned["accuracy_mean"] > rows[c]["accuracy_mean"] + rows[c]["accuracy_std"] for c in ("full->full", "random-target")}
    full_foc = rows["full->full"]["focal_mean"]
    change = (tuned["focal_mean"] - full_foc) / full_foc if full_foc else 0.0
    if all(beats.values()):
        text = (f"GAIN: tuned test accuracy {tuned['accuracy_mean']:.4f} beats full->full and random-target beyond their "
                f"seed-to-seed spread; focal pair {focal} confusions change by {change:+.1%} against full->full.")
    else:
        lost = ", ".join(c for c, ok in beats.items() if not ok)
        text = (f"NO GAIN: the tuned strategy does not beat {lost} beyond the seed-to-seed spread on test accuracy "
                f"(tuned {tuned['accuracy_mean']:.4f} +- {tuned['accuracy_std']:.4f}); focal pair {focal} confusions "
                f"change by {change:+.1%} against full->full.")
    return {"focal_pair": focal, "strategies": rows, "verdict": {"gain": all(beats.values()), "beats": beats,
            "focal_change_vs_full": change, "text": text}, "best_trial": best}


def summary_markdown(summary: dict[str, Any]) -> str:
    focal = summary["focal_pair"]
    lines = [f"| strategy | test accuracy (%) | {focal} confusions | paired diff vs full->full (acc. points) | seeds |", "|---|---|---|---|---|"]
    for name in STRATEGIES:
        r = summary["strategies"].get(name)
        if r is None:
            continue
        lines.append(f"| {name} | {100 * r['accuracy_mean']:.2f} +- {100 * r['accuracy_std']:.2f} | {r['focal_mean']:.1f} +- {r['focal_std']:.1f} | "
                     f"{100 * r['paired_accuracy_diff_mean']:+.2f} +- {100 * r['paired_accuracy_diff_std']:.2f} | {len(r['seeds'])} |")
    return "\n".join(lines) + f"\n\n{summary['verdict']['text']}\n"


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
