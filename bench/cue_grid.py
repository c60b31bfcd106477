"""Shortcuts as they occur (issue 41): planted cues of several kinds, each judged by the shortcut
check with and without its one-shape route, at several levels.

Each kind is a set of ``plant.*`` overrides on top of bench/power.py's corner mark (7s, the
bottom-right, the test split marked in half of every class); ``--run`` trains and explains
through bench/power.py (one results file per kind under ``--out-dir``, documents under
``--work``, models reused). ``--table`` reads the results and the saved documents and, per kind
and rho, prints how often the report states a shortcut check on the mark (a check for 7 whose
prototype holds at least 30% of the mark's grid cells) and how often it states a check
elsewhere (false), under rules judged from the same
documents: a rigid copy only (``explain.shortcut_consistent=1``), or a rigid copy or one shape
at several levels of ``explain.shortcut_consistent``, with exact 95% intervals, the model's reliance on the
mark (the share of marked other digits it calls 7 beyond unmarked ones, and the worst group),
the mark's rank in the report's worth-a-look list when it is no check, and on clean and shuffled-label runs the share with any shortcut check at all.

    python bench/cue_grid.py --run --kinds jitter,small,text --rho 0.95,0.5 --seeds 2
    python bench/cue_grid.py --table
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.power import doc_path, one, trained_config  # noqa: E402
from i2x.reporting.claims import shortcut_checks, worth_a_look  # noqa: E402
from i2x.reporting.power import share_interval  # noqa: E402

KINDS = {
    "rigid": "",  # the 5-pixel white square, pixel-identical in the corner
    "jitter": "plant.position=random,plant.region=10,plant.intensity=0.6,plant.noise=0.1",  # moves in a 10-px corner square, 60-100% bright, noise
    "small": "plant.size=3",  # a 3x3 square
    "text": "plant.mark=text,plant.size=8,plant.position=random,plant.region=15,plant.intensity=0.8,plant.jpeg=75",  # 'i2x', jittered, JPEG 75
}
RULES = {"rigid": 1.0, "shape 0.8": 0.8, "shape 0.9": 0.9, "shape 0.95": 0.95}  # explain.shortcut_consistent (1: the route off)


def _checks(doc: dict, level: float) -> list[dict]:
    judged = copy.deepcopy(doc)
    judged.setdefault("config", {}).setdefault("explain", {})["shortcut_consistent"] = level
    return shortcut_checks(judged)


def judge(row: dict, doc: dict) -> dict[str, bool]:
    """Per rule: does the run state a check on the mark (planted runs), and any check that is not
    on the mark (a false statement; on the controls, any check at all)."""
    target = doc["classes"][row["target"]]
    on_mark = {int(k) for k, v in (row.get("mark_shares") or {}).items() if v >= 0.3} if row["rho"] is not None else set()
    out: dict = {}
    for rule, level in RULES.items():
        mine = [r["class"] == target and r["prototype"] in on_mark for r in _checks(doc, level)]
        out[rule], out[rule + " false"] = any(mine), not all(mine)
    judged = copy.deepcopy(doc)
    judged.setdefault("config", {}).setdefault("explain", {})["shortcut_consistent"] = RULES["rigid"]
    out["look"] = next((i + 1 for i, r in enumerate(worth_a_look(judged)) if r["class"] == target and r["prototype"] in on_mark), None)
    return out


def table(out_dir: Path, work: Path) -> None:
    runs = []
    for path in sorted(out_dir.glob("grid-*.jsonl")):
        kind = path.stem.removeprefix("grid-")
        for row in map(json.loads, path.read_text().splitlines()):
            doc_file = doc_path(work, row["dataset"], row["rho"], row["seed"], row["n"], row["permuted"], row.get("explain", ""),
                                row.get("plant", ""))
            if "plant" not in row or not doc_file.is_file():
                continue  # a row from before documents were named by their plant: its document may be another kind's
            label = kind if row["rho"] is not None else ("shuffled labels" if row["permuted"] else "clean")
            runs.append({"kind": label, "rho": row["rho"], "seed": row["seed"], "flip": row.get("flip"), "worst": row.get("worst_group"),
                         **judge(row, json.loads(doc_file.read_text()))})
    seen = set()
    print("| cue | rho | runs | " + " | ".join(f"stated: {'rigid copies only' if r == 'rigid' else 'rigid or ' + r}" for r in RULES)
          + " | the mark's rank in worth a look (rigid copies only) | reliance: marked others called 7 | worst group |")
    print("|---|---|---|" + "---|" * len(RULES) + "---|---|---|")
    print("| (each cell: runs that state the mark; runs with a check elsewhere, a false statement) |")
    for r in runs:
        key = (r["kind"], r["rho"])
        if key in seen or r["rho"] is None:
            continue
        seen.add(key)
        cell = [x for x in runs if (x["kind"], x["rho"]) == key]
        ranks = ", ".join(str(x["look"]) if x["look"] else "-" for x in cell)
        print(f"| {r['kind']} | {r['rho']} | {len(cell)} | " + " | ".join(_share(cell, rule) for rule in RULES) + f" | {ranks} | "
              f"{_range([x['flip'] for x in cell], 100, '%')} | {_range([x['worst'] for x in cell], 100, '%')} |")
    for label in ("clean", "shuffled labels"):
        cell = [x for x in runs if x["kind"] == label]
        if cell:
            print(f"| {label}: any check | - | {len(cell)} | " + " | ".join(_false(cell, rule) for rule in RULES) + " | - | - | - |")


def _share(cell: list[dict], rule: str) -> str:
    """Runs that state the mark (with the exact 95% interval); runs with a false check."""
    k, false = sum(x[rule] for x in cell), sum(x[rule + " false"] for x in cell)
    lo, hi = share_interval(k, len(cell))
    return f"{k} of {len(cell)} ({100 * lo:.0f}-{100 * hi:.0f}%); false {false}"


def _false(cell: list[dict], rule: str) -> str:
    """Runs with any check (the controls: every check is false), with the exact 95% interval."""
    k = sum(x[rule + " false"] for x in cell)
    lo, hi = share_interval(k, len(cell))
    return f"{k} of {len(cell)} ({100 * lo:.0f}-{100 * hi:.0f}%)"


def _range(values: list, scale: float, unit: str) -> str:
    v = np.array([x for x in values if x is not None], dtype=float) * scale
    return "-" if not len(v) else (f"{v.min():.1f}{unit}" if len(v) == 1 else f"{v.min():.1f}-{v.max():.1f}{unit}")


def rescore(out_dir: Path, work: Path) -> None:
    """Measure ``consistent`` again in every saved document, from its saved model: the final
    checkpoint's saliency and features, the same prototypes (same seed), then
    :func:`~i2x.explanation.consistency.shape_consistency` (for documents written before a change
    to the measure; the rest of each document is kept, and its prototypes' ``rigid`` is
    measured again too, as a check that the prototypes are the same)."""
    import torch

    from bench.power import _permuted
    from i2x.explanation.cam_methods import saliency_pass
    from i2x.explanation.consistency import shape_consistency
    from i2x.explanation.prototypes import fit_prototypes
    from i2x.explanation.rigid import rigidity
    from i2x.platform.config_io import config_from_dict
    from i2x.training.checkpoints import (
        atomic_write_text,
        list_checkpoints,
        model_from_checkpoint,
        read_checkpoint,
    )
    from i2x.training.data import load_data
    from i2x.training.loop import run_folder

    for path in sorted(out_dir.glob("grid-*.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            doc_file = doc_path(work, row["dataset"], row["rho"], row["seed"], row["n"], row["permuted"], row.get("explain", ""),
                                row.get("plant", ""))
            if "plant" not in row or not doc_file.is_file():
                continue
            doc = json.loads(doc_file.read_text())
            config = config_from_dict(doc["config"])
            data = load_data(config.data, config.seed, config.plant)
            data = _permuted(data, row["seed"]) if row["permuted"] else data
            trained = trained_config(row["dataset"], row["rho"], row["seed"], work, row["target"], row["plant"])
            folder = run_folder(trained) if not row["permuted"] else work / "permuted" / run_folder(trained).name
            final = list_checkpoints(folder)[-1]
            payload = read_checkpoint(final)
            model = model_from_checkpoint(payload, str(final))
            images, labels = data.train_x[data.analysis_idx], data.train_y[data.analysis_idx]
            cfg = config.explain
            out = saliency_pass(model, payload["target_layer"], images, labels, method=cfg.method, target=cfg.target,
                                normalize=cfg.normalize, batch_size=cfg.batch_size, keep_features=True, device=torch.device("cpu"))
            protos = fit_prototypes(out.features, labels, len(data.classes), cfg.n_prototypes, cfg.pca_components, cfg.fit_max_locations,
                                    cfg.n_exemplars, config.seed, tuple(images.shape[-2:]), cfg.kmeans_n_init, saliency=out.maps.numpy())
            y, classes = labels.numpy(), protos.coverage.argmax(1)
            rigid = rigidity(images, protos.assignment, y, classes)[0]
            consistent = shape_consistency(images, protos.assignment, y, classes, seed=config.seed)
            same = sum(abs(float(p["where"].get("rigid") or 0.0) - float(r)) < 1e-3 for p, r in zip(doc["prototypes"], rigid, strict=True))
            for p, v in zip(doc["prototypes"], consistent, strict=True):
                p["where"]["consistent"] = round(float(v), 6)
            atomic_write_text(doc_file, json.dumps(doc))
            print(f"{doc_file.name}: rigid the same for {same} of {len(rigid)} prototypes; consistent measured again", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--rescore", action="store_true", help="measure 'consistent' again in the saved documents (see rescore)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--rho", default="0.95,0.5")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--controls", type=int, default=3, help="clean and shuffled-label runs (seeds 0..)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--work", default="bench/out/grid-work")
    ap.add_argument("--out-dir", default="bench/out")
    args = ap.parse_args()
    out_dir, work = Path(args.out_dir), Path(args.work)
    if args.run:
        out_dir.mkdir(parents=True, exist_ok=True)
        for kind in args.kinds.split(","):
            path = out_dir / f"grid-{kind}.jsonl"
            done = {(r["rho"], r["seed"], r["permuted"]) for r in map(json.loads, path.read_text().splitlines()) if "plant" in r} \
                if path.is_file() else set()
            jobs = [(float(rho), s, False) for s in range(args.seeds) for rho in args.rho.split(",")]
            if kind == next(iter(args.kinds.split(","))):
                jobs += [(None, s, p) for s in range(args.controls) for p in (False, True)]
            for rho, seed, permuted in jobs:
                if (rho, seed, permuted) in done:
                    continue
                row = one("mnist", rho, seed, args.n, work, permuted, 7, "", KINDS[kind])
                with path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{kind} rho={rho} seed={seed} permuted={permuted}: flip {row.get('flip')}, checks {row['shortcut_checks']}", flush=True)
    if args.rescore:
        rescore(out_dir, work)
    if args.table or not (args.run or args.rescore):
        table(out_dir, work)


if __name__ == "__main__":
    main()
