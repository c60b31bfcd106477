"""The explain stage run: the I2X analysis of a finished training run, tracked, with its artifacts."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from i2x.platform import tracking
from i2x.platform.config import Config
from i2x.platform.config_io import config_from_dict
from i2x.platform.errors import I2XError
from i2x.platform.process import scratch_dir
from i2x.runs.artifacts import MAPS, read_maps, resolve_run, write_explain_outputs
from i2x.runs.runconfig import run_config
from i2x.training.checkpoints import check_data_fits, check_same_run


def _checkpoint_files(args: argparse.Namespace, scratch: Path) -> tuple[list[Path], str | None]:
    from i2x.training.checkpoints import list_checkpoints

    if args.run_id:
        args.run_id = resolve_run(args.run_id, "train")
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
    from i2x.explanation.analysis import MIN_CHECKPOINTS, preflight
    from i2x.explanation.document import dumps, explain, validate
    from i2x.training.checkpoints import model_from_checkpoint, read_checkpoint, step_of
    from i2x.training.data import load_data
    from i2x.training.loop import resolve_device

    scratch = scratch_dir("explain")
    try:
        files, train_run_id = _checkpoint_files(args, scratch)
        if len(files) < MIN_CHECKPOINTS:
            raise I2XError(f"found {len(files)} checkpoint(s); I2X needs at least {MIN_CHECKPOINTS} (train with more train.checkpoint_fractions or epochs)")
        final = read_checkpoint(files[-1])
        config = run_config(args, config_from_dict(final["config"]))
        data = load_data(config.data, config.seed, config.plant)
        check_data_fits(final, data, config)
        images = data.train_x[data.analysis_idx]
        labels = data.train_y[data.analysis_idx]
        device = resolve_device(config.train.device)
        payloads = [final if i == len(files) - 1 else None for i in range(len(files))]

        def load_model(t: int) -> torch.nn.Module:
            payload = payloads[t] or read_checkpoint(files[t])
            return model_from_checkpoint(payload, str(files[t]))

        preflight(load_model(len(files) - 1), images, config.explain, config.explain.target_layer or None)  # before a run exists
        infos = []
        for path in files:
            payload = read_checkpoint(path)
            check_same_run(final, files[-1], payload, path)
            infos.append({"step": step_of(path), "epoch": float(payload["epoch"]), "val_accuracy": payload["metrics"].get("val_accuracy")})

        tags = {
            tracking.TAG_STAGE: "explain",
            tracking.TAG_DATASET: config.data.name,
            tracking.TAG_MODEL: config.model.name,
            tracking.TAG_TRAIN_RUN: train_run_id or "",
        }
        out = _explain_folder(config, files)
        name = f"explain {config.data.name} {config.model.name}"  # short: the runs table cut "(from train ab12cd)"; the tag keeps it
        with tracking.open_run(name, tags, local=out.resolve()) as run:
            tracking.log_params(config.flat())
            tracking.log_text(config.to_yaml(), "config/resolved.yaml")
            timings: dict[str, float] = {}
            if (out / "COMPLETE").is_file():
                print(f"i2x explain: reusing the finished analysis in {out} (same checkpoints and explain config)")
                doc = json.loads((out / "explanation" / "explanation.json").read_text())
            else:
                analysis, doc = explain(len(files), load_model, infos, data, config, device, target_layer=final["target_layer"],
                                        train_run_id=train_run_id)
                timings = analysis.timings
                validate(doc)
                # Written next to the checkpoints and kept: an upload failure loses nothing, and
                # a re-run with the same checkpoints and config only uploads.
                partial = out.with_name(out.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                write_explain_outputs(partial, doc, dumps(doc), analysis, images, labels, data.classes, infos, config)
                from i2x.reporting.html import explain_report
                from i2x.runs.artifacts import fetch_evaluation

                explain_report(doc, read_maps(partial / MAPS), partial / "report", seed=config.seed,
                               evaluation=fetch_evaluation(train_run_id, scratch / "train-evaluation"))
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
            from i2x.reporting.claims import (
                copy_checks,
                findings_stated,
                fit_line,
                headline,
                shortcut_checks,
            )
            from i2x.reporting.power import power_line

            tracking.log_metrics({"n_findings": len(findings_stated(doc)),  # the headline's count; n_verified: causal check only
                                  "n_shortcut_checks": len(shortcut_checks(doc)) + len(copy_checks(doc))})  # what tune acts on
            said, fit = headline(doc), fit_line(metrics)
            tracking.describe_run(tracking.TAG_HEADLINE, said, out / "report" / "index.html", f"{said}. {fit}. Report: report/index.html.")
            print(f"i2x explain: run {run.info.run_id} FINISHED: {said}\n  {fit}; HDBSCAN noise {metrics['noise_share']:.2f}\n  {power_line(doc)}")
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
