"""Experiment: train a config, explain it, and print the findings and stage times (no MLflow).

Meant for the larger runs (CIFAR-10 + ResNet-18 on a GPU): it writes the explanation
JSON and the figures to --out and prints a plain summary.

    python bench/explain_e2e.py --config cifar10 --data-dir ../shared/datasets --out bench/out/cifar10
    python bench/explain_e2e.py --config cifar10 --overrides data.train_limit=2000,train.epochs=1   # quick check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _pipeline import train_and_explain

from i2x.explanation.document import dumps, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--overrides", default="")
    parser.add_argument("--out", default="bench/out/explain")
    args = parser.parse_args()
    run = train_and_explain(args.config, args.data_dir, args.overrides)
    config, data, result, analysis, doc, infos, times = run.config, run.data, run.result, run.analysis, run.doc, run.infos, run.times
    files, device = run.payloads, run.device
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    out = Path(args.out)
    validate(doc)
    from i2x.runs.artifacts import write_explain_outputs

    t0 = time.perf_counter()
    write_explain_outputs(out, doc, dumps(doc), analysis, images, labels, data.classes, infos, config)
    import numpy as np

    from i2x.reporting.html import explain_report

    with np.load(out / "saliency" / "maps.npz") as npz:
        explain_report(doc, dict(npz), out / "report", seed=config.seed)
    times["figures"] = time.perf_counter() - t0
    dev = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"\n== {config.data.name} / {config.model.name} on {dev}; {len(files)} checkpoints, N={len(labels)}, K={config.explain.n_prototypes}")
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    print("analysis stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in analysis.timings.items()))
    print(f"test accuracy {result.final_metrics['test_accuracy']:.4f}; val per checkpoint {[round(c['val_accuracy'], 3) for c in infos]}")
    m = doc["metrics"]
    print(f"mean held-out R^2 {m['mean_r2_heldout']}, HDBSCAN noise {m['noise_share']}, uncertain prototypes {m['n_uncertain']}")
    for u in doc["uncertain"][:8]:
        print(f"  uncertain P{u['prototype']}: {u['pair'][0]} <-> {u['pair'][1]}, u={u['score']:.3f} (o={u['oscillation']:.2f}, share={u['share']:.2f})")
    prog = sorted(doc["progression"], key=lambda p: (p["separated_at"] is None, p["separated_at"] or 0), reverse=True)
    print("last separated pairs: " + "; ".join(f"{p['pair'][0]}-{p['pair'][1]} at {p['separated_at']} (peak {max(p['confusions'])}, final {p['confusions'][-1]})" for p in prog[:5]))
    print("shared/specialised per class: " + ", ".join(f"{c['name']} {len(c['shared'])}/{len(c['specialised'])}" for c in doc["class_structure"]))
    print(f"distinct-vs-separation Spearman: {doc['distinct_vs_separation_spearman']}")
    (out / "summary.json").write_text(json.dumps({"times": times, "analysis": analysis.timings, "test_accuracy": result.final_metrics["test_accuracy"], "metrics": m}, indent=2))


if __name__ == "__main__":
    main()
