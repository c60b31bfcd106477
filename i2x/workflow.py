"""Stage orchestration behind the CLI and MLproject entry points: files, pictures, MLflow.

Each function resolves the config, opens one MLflow run, calls the pure stage
functions and logs what they return under the artifact contract:

- train: ``checkpoints/ckpt-<step:08d>.pt``, ``checkpoints/index.json``,
  ``config/resolved.yaml``, ``report/training.png``;
- explain: ``explanation/explanation.json``, ``saliency/ckpt-<step:08d>.png``,
  ``saliency/maps.npz``, ``prototypes/gallery*.png``, ``prototypes/prototypes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2x import tracking
from i2x.config import Config, config_from_dict
from i2x.errors import I2XError
from i2x.runconfig import run_config
from i2x.secrets import redact
from i2x.training import resolve_model

GALLERY_PAGE = 32  # prototypes per gallery page: 128 tiles in one figure are unreadable


def train_run(args: argparse.Namespace) -> str:
    """Train with checkpoints, tracked in MLflow; resumes from local checkpoints. Returns the run id."""
    from i2x.checkpoints import atomic_write_text, list_checkpoints
    from i2x.data import load_data
    from i2x.training import resolve_device, run_folder, train
    from i2x.viz import plot_training

    asked = run_config(args)
    config = resolve_model(asked)
    if asked.model.name == "auto":
        print(f"i2x: model.name=auto on {resolve_device(config.train.device).type}: {config.model.name} (width {config.model.width})", flush=True)
    data = load_data(config.data, config.seed)
    folder = run_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "runs.json"
    tags = {tracking.TAG_STAGE: "train", tracking.TAG_DATASET: config.data.name, tracking.TAG_MODEL: config.model.name}
    with tracking.open_run(f"train {config.data.name} {config.model.name}", tags, local=folder.resolve()) as run:
        run_id = run.info.run_id
        # read and written under the folder's lock (open_run), atomically: no run id is lost
        previous = json.loads(ledger.read_text()) if ledger.is_file() else []
        atomic_write_text(ledger, json.dumps(previous + [run_id]))  # a dead earlier run was closed by open_run
        tracking.log_params(config.flat())
        tracking.log_text(config.to_yaml(), "config/resolved.yaml")
        existing = list_checkpoints(folder)
        if existing:
            tracking.set_tags({tracking.TAG_RESUMED_FROM: existing[-1].name})
            for path in existing:
                tracking.log_artifact(path, "checkpoints")
        history: list[tuple[int, dict[str, float]]] = []

        def on_metrics(step: int, metrics: dict[str, float]) -> None:
            history.append((step, metrics))
            tracking.log_metrics(metrics, step=step)

        def on_checkpoint(path: Path, _info: object) -> None:
            tracking.log_artifact(path, "checkpoints")

        result = train(config, data, folder, on_metrics=on_metrics, on_checkpoint=on_checkpoint)
        tracking.log_artifact(folder / "index.json", "checkpoints")
        tracking.log_metrics(result.final_metrics)
        scratch = tracking.scratch_dir("train")
        try:
            plot_training(result.checkpoints, history, scratch / "training.png")
            tracking.log_artifact(scratch / "training.png", "report")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print(f"i2x train: run {run_id} FINISHED, test accuracy {result.final_metrics['test_accuracy']:.4f}, "
              f"{len(result.checkpoints)} checkpoints in {folder}")
    return run_id


def _data_fits(final: dict, data: Any, config: Config) -> None:
    """Refuse data that is not what the checkpoints were trained on (another class list,
    channel count or size, e.g. ``--data-dir`` at another ImageFolder tree): labels would
    index the wrong logits and the explanation would be silently wrong."""
    meta = final["data"]
    ours = {"classes": list(data.classes), "channels": data.channels, "image_size": data.image_size}
    theirs = {k: meta[k] for k in ours}
    if ours != theirs:
        diff = "; ".join(f"{k} {ours[k]} here, {theirs[k]} in the checkpoints" for k in ours if ours[k] != theirs[k])
        raise I2XError(f"the data under {config.data.root or '(default root)'} is not what the checkpoints were trained on ({diff}); "
                       "point --data-dir at the training data")


def _same_run(final: dict, final_path: Path, payload: dict, path: Path) -> None:
    """Refuse a checkpoint of another training run (another seed, data, model, recipe, class
    list or architecture) in one explain call: the analysis would stitch two models' histories."""
    def identity(p: dict) -> dict[str, object]:
        flat = config_from_dict(p["config"]).flat()
        keys = {k: v for k, v in flat.items() if k.split(".")[0] in ("run", "data", "model", "train")
                and k not in ("run.work_dir", "data.root", "data.download", "train.log_every", "train.eval_batch_size", "train.device")}
        return {**keys, "arch": p.get("arch"), "classes": p["data"]["classes"]}

    want, got = identity(final), identity(payload)
    diff = [k for k in want if want[k] != got.get(k)]
    if diff:
        shown = ", ".join(f"{k} {got.get(k)} vs {want[k]}" for k in diff[:3])
        raise I2XError(f"checkpoint {path.name} is not from the training run of {final_path.name} ({shown}); "
                       "explain the checkpoints of one run (one folder per run)")


def _checkpoint_files(args: argparse.Namespace, scratch: Path) -> tuple[list[Path], str | None]:
    from i2x.checkpoints import list_checkpoints

    if args.run_id:
        tracking.get_run(args.run_id)
        names = [p for p in tracking.list_artifacts(args.run_id, "checkpoints") if p.endswith(".pt")]
        if not names:
            raise I2XError(f"run {args.run_id} has no checkpoints/ckpt-*.pt artifacts; is it an i2x train run?")
        local = tracking.download_artifacts(args.run_id, "checkpoints", scratch)
        return list_checkpoints(local), args.run_id
    if args.checkpoints:
        folder = Path(args.checkpoints)
        if not folder.is_dir():
            raise I2XError(f"--checkpoints {folder} is not a folder of ckpt-*.pt files")
        return list_checkpoints(folder), None
    raise I2XError("say which training run to explain: --run-id RUN_ID or --checkpoints FOLDER")


def explain_run(args: argparse.Namespace) -> str:
    """Explain a finished training run; returns the explain run id."""
    from i2x.analysis import MIN_CHECKPOINTS, analyse
    from i2x.checkpoints import model_from_checkpoint, read_checkpoint, step_of
    from i2x.data import load_data
    from i2x.explanation import document_of, dumps, validate
    from i2x.training import resolve_device

    scratch = tracking.scratch_dir("explain")
    try:
        files, train_run_id = _checkpoint_files(args, scratch)
        if len(files) < MIN_CHECKPOINTS:
            raise I2XError(f"found {len(files)} checkpoint(s); I2X needs at least {MIN_CHECKPOINTS} (train with more train.checkpoint_fractions or epochs)")
        final = read_checkpoint(files[-1])
        config = run_config(args, config_from_dict(final["config"]))
        data = load_data(config.data, config.seed)
        _data_fits(final, data, config)
        images = data.train_x[data.analysis_idx]
        labels = data.train_y[data.analysis_idx]
        device = resolve_device(config.train.device)
        payloads = [final if i == len(files) - 1 else None for i in range(len(files))]

        def load_model(t: int) -> torch.nn.Module:
            payload = payloads[t] or read_checkpoint(files[t])
            return model_from_checkpoint(payload, str(files[t]))

        infos = []
        for path in files:
            payload = read_checkpoint(path)
            _same_run(final, files[-1], payload, path)
            infos.append({"step": step_of(path), "epoch": float(payload["epoch"]), "val_accuracy": payload["metrics"].get("val_accuracy")})

        tags = {
            tracking.TAG_STAGE: "explain",
            tracking.TAG_DATASET: config.data.name,
            tracking.TAG_MODEL: config.model.name,
            tracking.TAG_TRAIN_RUN: train_run_id or "",
        }
        out = _explain_folder(config, files)
        name = f"explain {config.data.name} {config.model.name}" + (f" (from train {train_run_id[:6]})" if train_run_id else "")
        with tracking.open_run(name, tags, local=out.resolve()) as run:
            tracking.log_params(config.flat())
            tracking.log_text(config.to_yaml(), "config/resolved.yaml")
            timings: dict[str, float] = {}
            if (out / "COMPLETE").is_file():
                print(f"i2x explain: reusing the finished analysis in {out} (same checkpoints and explain config)")
                doc = json.loads((out / "explanation" / "explanation.json").read_text())
            else:
                analysis = analyse(len(files), load_model, images, labels, data.num_classes, config.explain, config.seed, device,
                                   layer=config.explain.target_layer or None, faithfulness=config.faithfulness)
                timings = analysis.timings
                h, w = analysis.maps.shape[-2:]
                doc = document_of(
                    analysis,
                    run={"train_run_id": train_run_id, "dataset": config.data.name, "model": config.model.name,
                         "target_layer": config.explain.target_layer or final["target_layer"], "grid": [int(h), int(w)],
                         "image_size": [int(images.shape[-2]), int(images.shape[-1])], "method": config.explain.method},
                    config=config.to_dict(),
                    classes=list(data.classes),
                    checkpoints=infos,
                    analysis_index=data.analysis_idx.numpy(),
                    labels=labels.numpy(),
                )
                validate(doc)
                # Written next to the checkpoints and kept: an upload failure loses nothing, and
                # a re-run with the same checkpoints and config only uploads.
                partial = out.with_name(out.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                write_explain_outputs(partial, doc, dumps(doc), analysis, images, labels, data.classes, infos, config)
                from i2x.report import explain_report

                with np.load(partial / "saliency" / "maps.npz") as npz:
                    explain_report(doc, dict(npz), partial / "report", seed=config.seed)
                (partial / "COMPLETE").write_text("")
                shutil.rmtree(out, ignore_errors=True)
                partial.rename(out)
            for sub in ("explanation", "saliency", "prototypes", "report"):
                for path in sorted((out / sub).iterdir()):
                    tracking.log_artifact(path, sub)
            metrics = doc["metrics"]
            tracking.log_metrics({
                **{k: float("nan") if v is None else v for k, v in metrics.items() if k not in ("n_prototypes", "n_samples")},
                **{f"time_{k}_s": v for k, v in timings.items()},
            })
            from i2x.report import fit_line, headline

            said, fit = headline(doc), fit_line(metrics)
            tracking.set_tags({tracking.TAG_HEADLINE: said, tracking.TAG_REPORT: str((out / "report" / "index.html").resolve()),
                               tracking.TAG_DESCRIPTION: f"{said}. {fit}. Report: report/index.html."})
            print(f"i2x explain: run {run.info.run_id} FINISHED: {said}\n  {fit}; HDBSCAN noise {metrics['noise_share']:.2f}")
            return run.info.run_id
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _explain_folder(config: Config, files: list[Path]) -> Path:
    """Local folder of an analysis, keyed by the checkpoints' contents and everything in the
    config that changes the explanation (so a re-run after a failed upload reuses it)."""
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
    with open(files[-1], "rb") as fh:
        digest.update(hashlib.file_digest(fh, "sha256").digest())
    d = config.to_dict()
    digest.update(json.dumps({"explain": d["explain"], "faithfulness": d["faithfulness"], "analysis": d["data"]["analysis_size"],
                              "seed": d["seed"]}, sort_keys=True).encode())
    return Path(config.work_dir) / f"explain-{config.data.name}-{digest.hexdigest()[:12]}"


def overlay_samples(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A fixed, seeded set of analysis positions, ``per_class`` per class, class by class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.extend(sorted(rng.choice(members, size=min(per_class, len(members)), replace=False)))
    return np.asarray(chosen, dtype=np.int64)


def write_explain_outputs(out: Path, doc: dict, text: str, analysis, images: torch.Tensor, labels: torch.Tensor, classes, infos, config: Config) -> None:  # noqa: ANN001
    """Write every explain artifact into ``out/{explanation,saliency,prototypes}``."""
    from i2x.checkpoints import atomic_write_text
    from i2x.saliency import upsample
    from i2x.viz import plot_gallery, plot_overlays

    for sub in ("explanation", "saliency", "prototypes"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "explanation" / "explanation.json", text)
    atomic_write_text(out / "prototypes" / "prototypes.json", json.dumps(doc["prototypes"], indent=2, sort_keys=True))
    tmp = out / "saliency" / ".maps.tmp.npz"
    np.savez_compressed(
        tmp,
        maps=analysis.maps.numpy().astype(np.float16),
        probs=analysis.probs.numpy().astype(np.float32),
        intensities=analysis.intensities.p.astype(np.float16),
        presence=analysis.intensities.presence,
        assignment=analysis.protos.assignment.astype(np.int16),
        groups=analysis.groups.astype(np.int16),
        labels=labels.numpy().astype(np.int16),
        steps=np.asarray([c["step"] for c in infos], dtype=np.int64),
        images=images.numpy(),
        interval_beta=analysis.structure.interval_beta.astype(np.float32),
    )
    os.replace(tmp, out / "saliency" / "maps.npz")
    tmp = out / "prototypes" / ".centers.tmp.npz"
    np.savez(tmp, pca_mean=analysis.protos.pca_mean, pca_components=analysis.protos.pca_components, centers=analysis.protos.centers)
    os.replace(tmp, out / "prototypes" / "centers.npz")

    y = labels.numpy()
    chosen = overlay_samples(y, config.explain.overlay_per_class, config.seed)
    size = tuple(images.shape[-2:])
    for t, info in enumerate(infos):
        heat = upsample(analysis.maps[t, chosen], size).numpy()
        conf = analysis.probs[t, chosen, y[chosen]].numpy()
        plot_overlays(images[chosen].numpy(), heat, y[chosen], conf, classes,
                      f"Grad-CAM at checkpoint {t} (step {info['step']}, epoch {info['epoch']:.2f})",
                      out / "saliency" / f"ckpt-{info['step']:08d}.png", per_class=config.explain.overlay_per_class)

    order = sorted(doc["prototypes"], key=lambda p: (not p["uncertain"], not p["shared_by"], not p["specialised_for"], -p["n_samples"], p["id"]))
    pages = [order[i : i + GALLERY_PAGE] for i in range(0, len(order), GALLERY_PAGE)]
    for i, page in enumerate(pages):
        name = "gallery.png" if i == 0 else f"gallery-{i + 1}.png"
        plot_gallery(images.numpy(), page, classes, f"Prototypes (page {i + 1}/{len(pages)})", out / "prototypes" / name)


def run_main(args: argparse.Namespace) -> None:
    """``mlflow run .``: train, then explain, then tune, each as a child run of this one.

    Children are started with ``mlflow.projects.run(..., env_manager="local")``: this
    process already runs in the project's environment, and an inner run without an
    explicit env manager would try to build a new one (MLflow issues #11849, #6611).
    """
    params = {"dataset": args.dataset, "config": args.config, "data_dir": args.data_dir,
              "seed": args.seed, "overrides": args.overrides}
    root = Path(__file__).resolve().parents[1]
    def stage(entry_point: str, extra: dict[str, str]) -> str:
        run_id = tracking.run_entry_point(root, entry_point, {**params, **extra})
        tracking.set_tags({f"i2x.{entry_point}_run": run_id})
        return run_id

    from i2x.data import load_data
    from i2x.plan import estimate
    from i2x.training import resolve_device

    config = resolve_model(run_config(args))
    plan = estimate(config, load_data(config.data, config.seed), resolve_device(config.train.device))
    print("\n".join(plan.lines()), flush=True)
    with tracking.open_run(f"main {config.data.name} {config.model.name}", {tracking.TAG_STAGE: "main"}):
        tracking.log_metrics({f"plan_{name}_s": round(s, 1) for name, s in plan.stages.items()}, step=0)
        ids, took = {}, {}
        for name, extra in (("train", {}), ("explain", {"run_id": "train"}), ("tune", {"run_id": "explain"})):
            start = time.perf_counter()
            ids[name] = stage(name, {k: ids[v] for k, v in extra.items()})
            took[name] = time.perf_counter() - start
            tracking.log_metrics({f"stage_{name}_s": round(took[name], 1)}, step=0)
        print("stage times (estimate at start -> real): " + ", ".join(
            f"{name} {plan.stages[name] / 60:.1f} -> {took[name] / 60:.1f} min" for name in took), flush=True)
        print(_main_summary(ids, config), flush=True)


def _main_summary(ids: dict[str, str], config: Config) -> str:
    """The end of ``main``: the result in three lines, then where to look. The same lines
    become the parent run's description; its headline metrics and verdict are logged too."""
    runs = {name: tracking.get_run(run_id) for name, run_id in ids.items()}
    train, expl, tune = (runs[n].data for n in ("train", "explain", "tune"))
    accuracy = train.metrics.get("test_accuracy")
    result = [
        f"model: {config.data.name} {config.model.name}, test accuracy {accuracy:.4f}" if accuracy is not None else f"model: {config.data.name} {config.model.name}",
        f"explanation: {expl.tags.get(tracking.TAG_HEADLINE, '(none)')}",
        f"fine-tuning: {tune.tags.get(tracking.TAG_VERDICT, '(none)')}",
    ]
    tracking.log_metrics({k: v for k, v in {"test_accuracy": accuracy, "n_verified": expl.metrics.get("n_verified"),
                                            "tuned_test_accuracy": tune.metrics.get("tuned_test_accuracy"),
                                            "full_full_test_accuracy": tune.metrics.get("full_full_test_accuracy")}.items() if v is not None})
    tracking.set_tags({tracking.TAG_HEADLINE: expl.tags.get(tracking.TAG_HEADLINE, ""), tracking.TAG_VERDICT: tune.tags.get(tracking.TAG_VERDICT, ""),
                       tracking.TAG_DESCRIPTION: "  \n".join(result)})
    ui, url = tracking.where_to_look(runs["train"].info.experiment_id)
    storage = tune.tags.get("optuna.storage", "")
    look = [
        f"explain report: {expl.tags.get(tracking.TAG_REPORT, '(not written)')}",
        f"tune report:    {tune.tags.get(tracking.TAG_REPORT, '(not written)')}",
        f"MLflow UI:      {ui}\n                then {url}",
        f"Optuna study:   optuna-dashboard {storage} --host 127.0.0.1 --port 8080   then http://127.0.0.1:8080"
        if storage.startswith(("sqlite", "postgresql", "mysql")) else f"Optuna study:   {tune.tags.get('optuna.study_name', '')} in {storage}",
    ]
    return "\ni2x main: done.\n  " + "\n  ".join(result) + "\n\nwhere to look:\n  " + "\n  ".join(look)


def _tune_context(explain_run_id: str, args: argparse.Namespace, scratch: Path, config_dict: dict | None = None):  # noqa: ANN202
    """Everything a trial needs, rebuilt from an explain run (the same in every worker)."""
    from i2x.checkpoints import model_from_checkpoint, read_checkpoint
    from i2x.data import load_data
    from i2x.models import build_model
    from i2x.training import resolve_device
    from i2x.tuning import TuneContext, assign_images, load_prototypes

    run = tracking.get_run(explain_run_id)
    train_run_id = run.data.tags.get(tracking.TAG_TRAIN_RUN, "")
    if run.data.tags.get(tracking.TAG_STAGE) != "explain" or not train_run_id:
        raise I2XError(f"run {explain_run_id} is not an i2x explain run of a tracked training run; pass the explain run id")
    if run.info.status != "FINISHED":
        raise I2XError(f"explain run {explain_run_id} is {run.info.status}, not FINISHED: its artifacts may be incomplete; "
                       "rerun explain (it resumes) and tune from the finished run")
    doc = json.loads(tracking.download_artifacts(explain_run_id, "explanation/explanation.json", scratch).read_text())
    protos = load_prototypes(tracking.download_artifacts(explain_run_id, "prototypes/centers.npz", scratch))
    last = sorted(p for p in tracking.list_artifacts(train_run_id, "checkpoints") if p.endswith(".pt"))[-1]
    final = read_checkpoint(tracking.download_artifacts(train_run_id, last, scratch))
    config = config_from_dict(config_dict) if config_dict else run_config(args, config_from_dict(final["config"]))
    data = load_data(config.data, config.seed)
    _data_fits(final, data, config)
    device = resolve_device(config.train.device)
    model = model_from_checkpoint(final, last).to(device)
    cache = Path(config.work_dir) / f"assignment-{explain_run_id}.pt"
    if cache.is_file():
        assignment = torch.load(cache, weights_only=True)
    else:
        from i2x.checkpoints import save_checkpoint

        assignment = assign_images(model, doc["run"]["target_layer"], data.train_x, protos, config.explain.batch_size, device)
        save_checkpoint(cache, assignment)  # atomic
    meta = final["data"]

    def build() -> torch.nn.Module:
        return build_model(config.model, meta["channels"], len(meta["classes"]), meta["mean"], meta["std"])

    ctx = TuneContext(config=config, data=data, build=build, state=final["model"], assignment=assignment,
                      scores=doc["scores"], device=device, background=doc.get("background", []))
    return ctx, doc


def _track(parent_run_id: str):  # noqa: ANN202
    import contextlib

    @contextlib.contextmanager
    def track(trial, plan):  # noqa: ANN001, ANN202
        params = {**trial.params, "targets": list(plan.targets) or "none", "scope": [list(c) for c in plan.scope] or "every class"}
        keys = ("n_affected", "n_dropped", "n_added", "class_counts", "epoch_fraction")
        with tracking.trial_run(parent_run_id, trial.number, params, lambda: {k: trial.user_attrs[k] for k in keys if k in trial.user_attrs},
                                study_name=trial.study.study_name) as log_epoch:
            yield log_epoch

    return track


def tune_run(args: argparse.Namespace) -> str:
    """The Optuna study for an explain run, then the controls and the test-set summary."""
    if args.worker:
        return tune_worker(args)
    from i2x.comparison import STRATEGIES, final_evaluation, summary_markdown, verdict_line
    from i2x.tuning import open_study, resolve_storage, run_study
    from i2x.viz import plot_optuna, plot_strategies

    if not args.run_id:
        raise I2XError("say which explain run to tune from: --run-id EXPLAIN_RUN_ID (or join a study with --worker)")
    scratch = tracking.scratch_dir("tune")
    try:
        ctx, doc = _tune_context(args.run_id, args, scratch)
        config = ctx.config
        # Keyed by the explanation's content and the tune config, not by run ids: a re-run
        # of the same pipeline (after a crash or a failed upload) resumes the same study.
        import hashlib

        stable = {k: v for k, v in doc.items() if k not in doc.get("timestamp_fields", [])}
        key = hashlib.sha256((json.dumps(stable, sort_keys=True) + json.dumps(config.to_dict()["tune"], sort_keys=True)).encode()).hexdigest()[:12]
        name = args.study or config.tune.study_name or f"i2x-{config.data.name}-{key}"
        url = resolve_storage(args.storage or config.tune.storage)
        tags = {tracking.TAG_STAGE: "tune", tracking.TAG_DATASET: config.data.name, tracking.TAG_MODEL: config.model.name,
                "i2x.explain_run_id": args.run_id, "optuna.study_name": name, "optuna.storage": redact(url)}
        local = Path(config.work_dir) / f"tune-{config.data.name}-{key}"
        with tracking.open_run(f"tune {config.data.name} {config.model.name} (from explain {args.run_id[:6]})", tags, local=local.resolve()) as parent:
            tracking.log_params(config.flat())
            study = open_study(name, url, config)
            study.set_user_attr("explain_run_id", args.run_id)
            study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
            study.set_user_attr("mlflow_run_url", tracking.where_to_look(parent.info.experiment_id, parent.info.run_id)[1])
            study.set_user_attr("what", f"I2X-guided fine-tuning of {config.data.name} {config.model.name} from explain run {args.run_id}: "
                                        "each trial perturbs the training images of the prototypes it targets, fine-tunes, and reports "
                                        "the validation accuracy (maximised) and the focal pair's validation confusions (minimised)")
            study.set_user_attr("config", config.to_dict())
            run_study(study, ctx, _track(parent.info.run_id))
            # after a killed run: its trials move under this run; the killed trial's run ends KILLED
            tracking.adopt_trials(parent.info.experiment_id, name, parent.info.run_id, {t.number: t.state.name for t in study.trials})
            summary = final_evaluation(study, ctx, cache=local / "controls.json")
            summary["study"] = {"name": name, "storage": redact(url), "n_trials": len(study.trials)}
            text = summary_markdown(summary)
            out = local / "tuning"  # kept locally: a failed upload loses nothing
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
            (out / "summary.md").write_text(f"# I2X-guided fine-tuning: {config.data.name} / {config.model.name}\n\n{text}")
            plot_strategies(summary, list(STRATEGIES), out / "strategies.png")
            optuna_figures = plot_optuna(study, out)
            for path in sorted(out.iterdir()):
                tracking.log_artifact(path, "tuning")
            if config.tune.artifact_store:
                from i2x.tuning import upload_study_artifacts

                upload_study_artifacts(study, config.tune.artifact_store, [out / "summary.json", out / "strategies.png"])
            from i2x.report import tune_report

            tune_report(summary, local / "report", optuna_figures)
            for path in sorted((local / "report").iterdir()):
                tracking.log_artifact(path, "report")
            for strategy, row in summary["strategies"].items():
                key = strategy.replace("->", "_").replace("-", "_").replace(" (1+1)", "_1_1")
                tracking.log_metrics({f"{key}_test_accuracy": row["accuracy_mean"], f"{key}_focal_confusions": row["focal_mean"]})
            verdict = verdict_line(summary)
            tracking.set_tags({tracking.TAG_VERDICT: verdict, tracking.TAG_REPORT: str((local / "report" / "index.html").resolve()),
                               tracking.TAG_DESCRIPTION: f"{verdict}. Study '{name}', {len(study.trials)} trials. Report: report/index.html."})
            print(f"i2x tune: run {parent.info.run_id} FINISHED, study '{name}' ({len(study.trials)} trials)\n\n{text}")
            return parent.info.run_id
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def tune_worker(args: argparse.Namespace) -> str:
    """Join a running study by name: run trials until the study holds ``n_trials``."""
    import optuna

    from i2x.tuning import resolve_storage, run_study, storage_for

    if not args.study:
        raise I2XError("--worker needs --study NAME (and --storage URL unless it is the default)")
    url = resolve_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage_for(url, 30))
    except KeyError:
        raise I2XError(f"no study '{args.study}' in {redact(url)}; start it with 'i2x tune --run-id ...' first") from None
    attrs = study.user_attrs
    scratch = tracking.scratch_dir("tune-worker")
    try:
        ctx, _ = _tune_context(attrs["explain_run_id"], args, scratch, config_dict=attrs["config"])
        run_study(study, ctx, _track(attrs["mlflow_parent_run_id"]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"i2x tune --worker: study '{args.study}' done")
    return attrs["mlflow_parent_run_id"]


OPTUNA_FIGURES = ("optimization_history.png", "pareto_front.png", "param_importances.png")


def report_run(args: argparse.Namespace) -> Path:
    """Regenerate the report of an explain or tune run, into ``--out`` or back into the run."""
    from i2x.report import explain_report, tune_report

    if not args.run_id:
        raise I2XError("say which run to report on: --run-id RUN_ID (an explain or tune run)")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise I2XError(f"--out {args.out} is a file; give a folder (it is created if missing) so that nothing there is overwritten")
    run = tracking.get_run(args.run_id)
    stage = run.data.tags.get(tracking.TAG_STAGE)
    scratch = tracking.scratch_dir("report")
    try:
        out = Path(args.out) if args.out else scratch / "report"
        if stage == "explain":
            doc = json.loads(tracking.download_artifacts(args.run_id, "explanation/explanation.json", scratch).read_text())
            with np.load(tracking.download_artifacts(args.run_id, "saliency/maps.npz", scratch)) as npz:
                index = explain_report(doc, dict(npz), out, seed=int(doc["config"].get("seed", 0)))
        elif stage == "tune":
            summary = json.loads(tracking.download_artifacts(args.run_id, "tuning/summary.json", scratch).read_text())
            figures = [tracking.download_artifacts(args.run_id, name, scratch) for name in tracking.list_artifacts(args.run_id, "tuning")
                       if Path(name).name in OPTUNA_FIGURES]  # drawn from the study when the run ended
            index = tune_report(summary, out, sorted(figures, key=lambda f: OPTUNA_FIGURES.index(f.name)))
        else:
            raise I2XError(f"run {args.run_id} is a '{stage}' run; reports are made for explain and tune runs")
        if not args.out:
            for path in sorted(out.iterdir()):
                tracking.log_artifact_to(args.run_id, path, "report")
            print(f"i2x report: logged report/index.html to run {args.run_id}")
        else:
            print(f"i2x report: wrote {index}")
        return index
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
