"""Experiment: train a config, explain it, and print the findings and stage times (no MLflow).

Meant for the larger runs (CIFAR-10 + ResNet-18 on a GPU): it writes the explanation
JSON and the figures to --out and prints a plain summary.

    python bench/explain_e2e.py --config cifar10 --data-dir ../shared/datasets --out bench/out/cifar10
    python bench/explain_e2e.py --config cifar10 --overrides data.train_limit=2000,train.epochs=1   # quick check
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from i2x.analysis import analyse
from i2x.checkpoints import model_from_checkpoint, read_checkpoint
from i2x.config import load_config
from i2x.data import load_data
from i2x.explanation import build_document, dumps, validate
from i2x.training import resolve_device, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--overrides", default="")
    parser.add_argument("--out", default="bench/out/explain")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    extra = f",{args.overrides}" if args.overrides else ""
    config = load_config(args.config, f"data.root={args.data_dir}{extra}")
    out = Path(args.out)
    times = {}
    t0 = time.perf_counter()
    data = load_data(config.data, config.seed)
    times["data"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        result = train(config, data, Path(folder), progress=False)
        times["train"] = time.perf_counter() - t0
        files = sorted(Path(folder).glob("ckpt-*.pt"))
        payloads = [read_checkpoint(f) for f in files]
    device = resolve_device(config.train.device)
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    t0 = time.perf_counter()
    analysis = analyse(len(files), lambda t: model_from_checkpoint(payloads[t], str(files[t])), images, labels,
                       data.num_classes, config.explain, config.seed, device, progress=False)
    times["analysis"] = time.perf_counter() - t0
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    h, w = analysis.maps.shape[-2:]
    doc = build_document(
        run={"train_run_id": None, "dataset": config.data.name, "model": config.model.name, "target_layer": payloads[-1]["target_layer"],
             "grid": [int(h), int(w)], "image_size": list(images.shape[-2:]), "method": config.explain.method},
        config=config.to_dict(), classes=list(data.classes), checkpoints=infos, protos=analysis.protos,
        analysis_index=data.analysis_idx.numpy(), groups=analysis.groups, fits=analysis.fits,
        structure=analysis.structure, labels=labels.numpy(),
    )
    validate(doc)
    from i2x.workflow import _write_outputs

    t0 = time.perf_counter()
    _write_outputs(out, doc, dumps(doc), analysis, images, labels, data.classes, infos, config)
    import numpy as np

    from i2x.report import explain_report

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
