"""Experiment: the I2X fine-tuning protocol in-process, without MLflow (for a GPU machine).

Trains the config, explains it, runs the Optuna study (in memory) and the controls, and
prints the paper-format table with the time of each stage. The MLflow path is
bench/paper_protocol.py; this one needs only torch, scikit-learn, hdbscan and optuna.

    python bench/protocol_offline.py --config cifar10 --overrides train.epochs=10,tune.n_trials=6
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _pipeline import train_and_explain

from i2x.training.checkpoints import model_from_checkpoint
from i2x.tuning.comparison import final_evaluation, summary_markdown
from i2x.tuning.study import TuneContext, assign_images, open_study, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--overrides", default="")
    parser.add_argument("--out", default="bench/out/protocol_offline.json")
    args = parser.parse_args()
    run = train_and_explain(args.config, args.data_dir, args.overrides)
    config, data, result, doc, times, device = run.config, run.data, run.result, run.doc, run.times, run.device
    payloads, analysis, files = run.payloads, run.analysis, run.payloads
    final = payloads[-1]
    model = model_from_checkpoint(final, "final").to(device)
    t0 = time.perf_counter()
    assignment = assign_images(model, model.target_layer, data.train_x, analysis.protos, config.explain.batch_size, device)
    ctx = TuneContext(config=config, data=data, build=lambda: model_from_checkpoint(final, "final"), state=final["model"],
                      assignment=assignment, scores=doc["scores"], device=device, background=doc["background"])
    study = open_study("offline", f"sqlite:///{tempfile.mkdtemp()}/optuna.db", config)
    run_study(study, ctx)
    times["study"] = time.perf_counter() - t0
    print(f"stage study: {times['study']:.1f} s, {len(study.trials)} trials", flush=True)
    t0 = time.perf_counter()
    summary = final_evaluation(study, ctx)
    best = study.trials[summary["best_trial"]["number"]]
    times["controls"] = time.perf_counter() - t0
    dev = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"\n== {config.data.name} / {config.model.name} on {dev}: test accuracy of the trained model "
          f"{result.final_metrics['test_accuracy']:.4f}; {len(files)} checkpoints; {doc['metrics']['n_uncertain']} uncertain prototypes")
    print("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"trials: {len(study.trials)} ({sum(t.state.name == 'PRUNED' for t in study.trials)} pruned); best {best.params}\n")
    print(summary_markdown(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"times": times, "summary": summary}, indent=2, default=str))


if __name__ == "__main__":
    main()
