"""Experiment: does the explanation pass its own causal test? (no MLflow)

Trains a config once into ``--ckpts`` (reused when it holds checkpoints), runs the
whole analysis with the causal check, and prints, for each named prototype, its
deletion effect against the three baselines, the held-out R^2 against its baselines,
the permutation null and ROAD. ``--before`` runs the first version's formulation
(fit through the origin, onset-weighted oscillation, no null) for comparison.

    python bench/causal.py --config mnist --ckpts bench/out/ckpts-mnist
    python bench/causal.py --config mnist --ckpts bench/out/ckpts-mnist --before
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from i2x.explanation.analysis import analyse
from i2x.platform.config_io import load_config
from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
from i2x.training.data import load_data
from i2x.training.loop import resolve_device, train

BEFORE = "explain.regression=origin,explain.oscillation_weight=later,explain.null_permutations=0,explain.uncertain_threshold=0.3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mnist")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--ckpts", required=True, help="checkpoint folder (trained here when empty)")
    parser.add_argument("--overrides", default="")
    parser.add_argument("--before", action="store_true", help="the first version's formulation, for comparison")
    parser.add_argument("--json", default="", help="write the figures here")
    args = parser.parse_args()
    overrides = ",".join(o for o in (f"data.root={args.data_dir}", args.overrides, BEFORE if args.before else "") if o)
    config = load_config(args.config, overrides)
    data = load_data(config.data, config.seed, config.plant)
    folder = Path(args.ckpts)
    if not list_checkpoints(folder) if folder.is_dir() else True:
        t0 = time.perf_counter()
        result = train(config, data, folder, progress=False)
        print(f"trained in {time.perf_counter() - t0:.0f} s, test accuracy {result.final_metrics['test_accuracy']:.4f}")
    files = list_checkpoints(folder)
    payloads = [read_checkpoint(f) for f in files]
    images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
    t0 = time.perf_counter()
    a = analyse(len(files), lambda t: model_from_checkpoint(payloads[t], str(files[t])), images, labels, data.num_classes,
                config.explain, config.seed, resolve_device(config.train.device), progress=False, faithfulness=config.faithfulness)
    total = time.perf_counter() - t0
    classes = data.classes
    print(f"\n== {config.data.name} / {config.model.name}, N={len(labels)}, K={config.explain.n_prototypes}, T={len(files)}, "
          f"{'BEFORE (origin, later-weighted oscillation, no null)' if args.before else 'AFTER'}; fills={list(config.faithfulness.fills)}")
    print(f"analysis {total:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in a.timings.items()))
    print("held-out R^2 (pooled, k-fold): " + json.dumps({p: {k: None if v is None else round(v, 3) for k, v in d.items()} for p, d in a.heldout.items()}))
    print(f"background prototypes: {a.structure.background}")
    if a.structure.null:
        for role, c in a.structure.null.counts.items():
            print(f"null {role}: real {c['real']:.0f} vs null {c['null_mean']:.1f} +- {c['null_std']:.1f}, p={c['p']:.3f}")
        rejected = [t for t in a.structure.null.tests if not t.kept]
        print(f"labels rejected by the null: {len(rejected)} of {len(a.structure.null.tests)}")
    tests = {(t.role, t.cls, t.prototype): t for t in a.structure.null.tests} if a.structure.null else {}

    def null_of(r) -> str:  # noqa: ANN001
        t = tests.get((r.claim.role, r.claim.classes[0] if r.claim.role != "uncertain" else -1, r.claim.prototype))
        return "-" if t is None else f"{t.p_adjusted:.3f} {'kept' if t.kept else 'rejected'}"

    print("| prototype | role | class(es) | null p (BH) | images | cells | effect | uniform | fg-matched | top Grad-CAM | excess [95% CI] | p adj | verified |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in a.deletion:
        cls = "<->".join(classes[c] for c in r.claim.classes)
        print(f"| P{r.claim.prototype} | {r.claim.role} | {cls} | {null_of(r)} | {r.n_images} | {r.cells_per_image:.1f} | {r.effect:.3f} | "
              f"{r.baselines['uniform']:.3f} | {r.baselines['foreground']:.3f} | {r.baselines['gradcam']:.3f} | "
              f"{r.excess:+.3f} [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}] | {r.p_adjusted:.3g} | {r.verified} |")
    by_role: dict[str, list] = {}
    for r in a.deletion:
        by_role.setdefault(r.claim.role, []).append(r)
    for role, rs in by_role.items():
        v = sum(1 for r in rs if r.verified)
        kept = [r for r in rs if not tests or "kept" in null_of(r)]
        both = sum(1 for r in kept if r.verified)
        print(f"{role}: {len(rs)} candidates, {v} verified causally ({100 * v / len(rs):.0f}%); {len(kept)} beat the null, "
              f"{both} of those verified (findings)")
    if a.road:
        print(f"ROAD (ROADCombined, {a.road.n_images} images, percentiles {a.road.percentiles}): Grad-CAM {a.road.gradcam:.4f} "
              f"[{a.road.gradcam_ci[0]:.4f}, {a.road.gradcam_ci[1]:.4f}] vs random maps {a.road.random:.4f} [{a.road.random_ci[0]:.4f}, {a.road.random_ci[1]:.4f}]")
    if args.json:
        Path(args.json).write_text(json.dumps({"heldout": a.heldout, "timings": a.timings,
                                               "deletion": [{"prototype": r.claim.prototype, "role": r.claim.role, "verified": r.verified,
                                                             "excess": r.excess} for r in a.deletion]}, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
