"""Does every stated finding hold under each fill? (issue 45)

For an explain run's document and its final checkpoint, every finding the report states (a
prototype's label past the null and the causal check, and every "the final model relies on")
is deleted again on **every** analysis image of its class that holds it (not the explain's
subsample of 300), once per fill: ``mean`` (the data set's mean colour), ``background``
(erasing to the image's border colour), ``blur``, ``road`` (pytorch-grad-cam's noisy linear
imputation). A finding holds under a fill when that fill's deletion test verifies it. Prints one
row per finding and a summary line, the table of docs/history.md.

    python bench/fills_audit.py --store bench/out/explain-cost-45/this-mnist/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILLS = ("mean", "background", "blur", "road")


def audit(store: Path, fills: tuple[str, ...] = FILLS) -> list[dict]:
    import mlflow

    from i2x.explanation.faithfulness import Claim, deletion_test
    from i2x.platform.config import FaithfulnessConfig
    from i2x.platform.config_io import config_from_dict
    from i2x.reporting.claims import named_prototypes
    from i2x.runs.artifacts import EXPLANATION, MAPS, read_explanation, read_maps
    from i2x.training.checkpoints import model_from_checkpoint, read_checkpoint

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store.resolve()}"
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    explain = next(r for r in runs if r.data.tags.get("i2x.stage") == "explain")
    train_id = explain.data.tags["i2x.train_run_id"]
    tmp = store.parent / "audit-dl"
    doc = read_explanation(Path(client.download_artifacts(explain.info.run_id, EXPLANATION, str(tmp))))
    maps = read_maps(Path(client.download_artifacts(explain.info.run_id, MAPS, str(tmp))))
    last = sorted(a.path for a in client.list_artifacts(train_id, "checkpoints") if a.path.endswith(".pt"))[-1]
    payload = read_checkpoint(Path(client.download_artifacts(train_id, last, str(tmp))))
    model = model_from_checkpoint(payload, last).eval()
    config = config_from_dict(payload["config"])
    images, labels = torch.from_numpy(maps["images"]), torch.from_numpy(maps["labels"].astype(np.int64))  # the analysis set
    assignment, final = np.asarray(maps["assignment"]), np.asarray(maps["maps"][-1], dtype=np.float32)
    classes = list(doc["classes"])
    named = named_prototypes(doc)
    rows = []
    for r in named["findings"] + named["model_only"]:
        if r["role"] == "uncertain":
            claim = Claim(r["prototype"], "uncertain", tuple(classes.index(c) for c in r["pair"]))
        else:
            claim = Claim(r["prototype"], r["role"], (classes.index(r["class"]),))
        row = {"prototype": r["prototype"], "role": r["role"], "target": r.get("class") or "/".join(r["pair"]),
               "stated_as": "finding" if r in named["findings"] else "relies on"}
        for how in fills:
            cfg = FaithfulnessConfig(fills=(how,), max_images=0)
            (result,) = deletion_test(model, images, labels, assignment, final, [claim], cfg, seed=config.seed, device=torch.device("cpu"))
            row[how] = {"verified": result.verified, "effect": round(result.effect, 3), "excess": round(result.excess, 3),
                        "n_images": result.n_images}
        rows.append(row)
        print(f"P{row['prototype']} -> {row['target']} ({row['role']}, {row['stated_as']}): " + "; ".join(
            f"{how} {'holds' if row[how]['verified'] else 'FAILS'} ({row[how]['effect']:+.2f}, excess {row[how]['excess']:+.2f})"
            for how in fills) + f"; {row[fills[0]]['n_images']} images", flush=True)
    holding = {how: sum(bool(r[how]["verified"]) for r in rows) for how in fills}
    every = sum(all(r[h]["verified"] for h in fills) for r in rows)
    print(f"{len(rows)} stated; holding: " + ", ".join(f"{how} {n}" for how, n in holding.items()) + f"; under every fill {every}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="an MLflow SQLite store holding one train and one explain run")
    ap.add_argument("--fills", default=",".join(FILLS))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows = audit(Path(args.store), tuple(args.fills.split(",")))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
