"""Detection power of the explanation on planted shortcuts (issue 21).

For a data set, a sweep over the planted share ``rho`` of one class's training images, the
number of analysed images ``N`` and seeds, plus two controls per seed (the clean data set, and
a model trained on permuted labels), this measures:

- **reliance**: how much the final model uses the mark, from the test split (marked in half of
  every class): the share of marked other-class images it calls the planted class, minus that
  of unmarked ones (``flip``), and the worst (class, mark) group. A model that learned the
  class's shape instead of the mark has nothing to find, whatever rho was planted;
- **power**: the share of runs where the report states something for the planted class in
  the mark's corner, in words: a shortcut check (a prototype's, or a verified rigid copy,
  which needs no prototype), or on photographs a finding placed there; also whether it is the
  mark's own prototype (the one assigned
  to >= 80% of the mark's grid cells), and power by reliance, all rho pooled;
- **false findings**: on the clean data, the share of runs with the same statement (a check or
  finding for that class in the mark's corner, where nothing is); on permuted labels, the
  share with any finding at all.

Models are trained once per (rho, seed) into ``--work`` and reused: a rerun only explains, and
each N re-explains the same checkpoints (the analysis subset is drawn after the splits, so the
training is unchanged). Results are appended to ``--out`` (JSON lines) as they come; a rerun
skips what is there. ``--table`` prints the power table and draws the figure from that file.

    python bench/power.py --dataset mnist --rho 1,0.5,0.2,0.1,0.05 --seeds 5 --n 2000
    python bench/power.py --table bench/out/power-mnist.jsonl --curve i2x/reporting/power_curves.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2x.explanation.document import explain  # noqa: E402
from i2x.platform.config_io import apply_overrides, load_config  # noqa: E402
from i2x.repair.heldout import worst_group  # noqa: E402
from i2x.reporting.claims import copy_checks, named_prototypes, shortcut_checks, worth_a_look  # noqa: E402
from i2x.reporting.power import share_interval  # noqa: E402
from i2x.training.checkpoints import (  # noqa: E402
    atomic_write_text,
    list_checkpoints,
    model_from_checkpoint,
    read_checkpoint,
)
from i2x.training.data import load_data  # noqa: E402
from i2x.training.loop import predictions, resolve_device, run_folder, train  # noqa: E402

# What each data set's sweep cuts, so that it fits a 2-core CPU (stated in the README with the curve).
# The permutation null is off: the claim under test, the shortcut check, rests on the causal
# check of the final model, not on the training-history null, and the null is most of the cost.
SETTINGS = {
    "mnist": ("mnist", "data.train_limit=12000,train.epochs=2,explain.null_permutations=0"),
    "cifar10": ("cifar10", "data.train_limit=10000,model.name=cnn,model.width=32,train.epochs=8,train.batch_size=256,"
                "train.lr=0.05,train.lr_schedule=onecycle,train.label_smoothing=0,train.bias_lr_scale=1,train.lookahead_every=0,"
                "train.tta_level=0,data.augment=false,explain.n_prototypes=64,explain.null_permutations=0"),
}
CUT_IN_WORDS = {"mnist": "12,000 training images, 2 epochs of the compact CNN",  # SETTINGS' cuts, as the power line says them
                "cifar10": "10,000 training images, 8 epochs of a width-32 CNN"}
CORNER = ("bottom-right", "bottom-right quarter")  # where the planted mark sits, in the report's words
PLANT = "plant.kind=shortcut,plant.mark=square,plant.position=fixed,plant.corner=br,plant.test=0.5"


def mark_cell_ids(marks: np.ndarray, assignment: np.ndarray, image_size: int) -> np.ndarray:
    """The prototype ids of every grid cell at least half covered by a mark, over the images
    whose ``marks`` box (y0, x0, y1, x1; -1 when unmarked) is set; ``assignment`` holds the
    same images' cells."""
    h, w = assignment.shape[-2:]
    ch, cw = image_size / h, image_size / w
    cells = []
    for i in np.flatnonzero(marks[:, 0] >= 0):
        y0, x0, y1, x1 = marks[i]
        for r in range(h):
            for c in range(w):
                dy = min(y1, (r + 1) * ch) - max(y0, r * ch)
                dx = min(x1, (c + 1) * cw) - max(x0, c * cw)
                if dy > 0 and dx > 0 and dy * dx >= 0.5 * ch * cw:
                    cells.append(int(assignment[i, r, c]))
    return np.asarray(cells, dtype=np.int64)


def mark_shares(data, analysis) -> dict[str, float]:
    """Each prototype's share of the mark's grid cells (those at least half covered by the
    mark) in the marked analysis images, for those holding at least 10%: a mark that moves or
    varies is often split over several prototypes, none of which :func:`mark_prototype` names.
    Keys are prototype ids as strings (the results file is JSON)."""
    cells = mark_cell_ids(data.train_marks[data.analysis_idx].numpy(), np.asarray(analysis.protos.assignment), data.image_size)
    if not len(cells):
        return {}
    ids, counts = np.unique(cells, return_counts=True)
    return {str(int(i)): float(c) / len(cells) for i, c in zip(ids, counts, strict=True) if c >= 0.1 * len(cells)}


def mark_prototype(shares: dict[str, float], share: float = 0.8) -> int | None:
    """The prototype assigned to at least ``share`` of the mark's grid cells (those at least
    half covered by the mark) in the marked analysis images (``shares``: :func:`mark_shares`),
    or None."""
    best = max(shares.items(), key=lambda kv: kv[1], default=None)
    return int(best[0]) if best is not None and best[1] >= share else None


def trained_config(dataset: str, rho: float | None, seed: int, work: Path, target: int, plant_with: str = ""):  # noqa: ANN201
    """The config a run's model is trained under: the data set's cut, and for a planted run the
    corner mark on ``rho`` of class ``target`` with ``plant_with`` on top."""
    name, cut = SETTINGS[dataset]
    plant = f",{PLANT},plant.classes=[{target}],plant.rho={rho}{',' + plant_with if plant_with else ''}" if rho is not None else ""
    return load_config(name, f"work_dir={work},seed={seed},{cut}{plant}")


def judge(doc: dict, target: str, k: int | None) -> dict:
    """Is prototype ``k`` stated for ``target``: as a shortcut check (the report's lead, which
    locates it in words), or as a finding; and which shortcut checks the run states at all."""
    checks = shortcut_checks(doc)
    named = named_prototypes(doc)
    mine = [r for r in checks if r["class"] == target]
    corner = sorted({r["prototype"] for r in mine if r["where"].get("region") in CORNER or r["where"].get("rigid_at") in CORNER})
    detected = k is not None and any(r["prototype"] == k for r in mine)
    finding = k is not None and any(r["prototype"] == k and r.get("class") == target for r in named["findings"])
    # a finding for the target class whose prototype the report places in the mark's corner: what photographs
    # (no blank canvas, so no shortcut check) can state; on clean data, a false finding of the same kind
    placed = sorted({r["prototype"] for r in named["findings"] if r.get("class") == target
                     and (doc["prototypes"][r["prototype"]].get("where") or {}).get("region") in CORNER})
    # a verified rigid copy (no prototype needed) for the target class in the mark's corner
    copies = copy_checks(doc)
    copied = [c for c in copies if c["class"] == target and c["where"] in CORNER]
    tested = [c for c in doc.get("faithfulness", {}).get("copies") or [] if c.get("push") is not None]
    faith = doc.get("config", {}).get("faithfulness", {})
    # candidates the model reads (the paste test passes): a verified copy, or one refused only by the scan's enrichment
    read = [c for c in tested if c["p_adjusted"] < faith.get("alpha", 0.05) and c["push"] >= faith.get("copy_min_push", 0.05)]
    return {"mark_prototype": k, "detected": bool(detected), "finding": bool(finding), "n_findings": len(named["findings"]),
            "located_finding": k is not None and k in placed, "corner_findings": placed,
            "shortcut_checks": [(r["prototype"], r["class"], r["where"].get("region")) for r in checks]
            + [("copy", c["class"], c["where"]) for c in copies],
            "corner_checks": corner + ["copy"] * bool(copied), "copy_detected": bool(copied),
            # how near a run came to a false copy: the largest push of any rigid-copy candidate it tested
            "copies_tested": len(tested), "copy_push_max": max((c["push"] for c in tested), default=None),
            "copies_read": [(c["class"], c["where"], c["push"], c.get("enrichment_p"), c["verified"]) for c in read],
            "lead": checks[0]["prototype"] if checks else None,
            # issue 41: cues the model needs and whose paste pushes their class, that a gate kept from a shortcut check
            "worth_a_look": [(r["prototype"], r["class"], r["where"].get("region"), round(r["push"], 3), r["why"][0][:40])
                             for r in worth_a_look(doc)],
            "mark_worth_a_look": any(r["class"] == target and (k is None or r["prototype"] == k) for r in worth_a_look(doc))}


def reliance(model, data, target: int) -> dict:
    """How much the final model uses the mark, from the test split (marked in half of every
    class): ``flip`` = the share of marked other-class images it calls ``target`` minus that of
    the unmarked ones, and the worst (class, mark) group's accuracy. What a detector could find
    is bounded by this, not by rho: a model that learned the class's shape instead has no
    shortcut to state."""
    pred = predictions(model, data.test_x, 1000, torch.device("cpu")).numpy()
    y, marked = data.test_y.numpy(), data.test_marks[:, 0].numpy() >= 0
    other = y != target
    flip = float((pred[other & marked] == target).mean() - (pred[other & ~marked] == target).mean())
    return {"flip": round(flip, 4), "worst_group": round(worst_group(pred, y, 2 * y + marked, min_size=1), 4)}


def _first(doc: dict) -> int | None:
    named = named_prototypes(doc)["findings"]
    return named[0]["prototype"] if named else None


def _permuted(data, seed: int):
    """The same bundle with its training labels permuted (seeded): nothing real to explain."""
    gen = torch.Generator().manual_seed(1000 + seed)
    return dataclasses.replace(data, train_y=data.train_y[torch.randperm(len(data.train_y), generator=gen)])


def one(dataset: str, rho: float | None, seed: int, n: int, work: Path, permuted: bool, target: int, explain_with: str = "",
        plant_with: str = "") -> dict:
    config = trained_config(dataset, rho, seed, work, target, plant_with)
    data = _permuted(load_data(config.data, config.seed, config.plant), seed) if permuted else load_data(config.data, config.seed, config.plant)
    folder = run_folder(config) if not permuted else work / "permuted" / run_folder(config).name
    t0 = time.perf_counter()
    result = train(config, data, folder, progress=False)
    t_train = time.perf_counter() - t0
    files = list_checkpoints(folder)
    payloads = [read_checkpoint(f) for f in files]
    # the same model, a different analysis subset of size n (drawn after the splits)
    analysed = apply_overrides(apply_overrides(config, {"data.analysis_size": n}), explain_with)
    adata = load_data(analysed.data, analysed.seed, analysed.plant)
    adata = _permuted(adata, seed) if permuted else adata
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    t0 = time.perf_counter()
    analysis, doc = explain(len(files), lambda t: model_from_checkpoint(payloads[t], str(files[t])), infos, adata, analysed,
                            resolve_device("cpu"), target_layer=payloads[-1]["target_layer"], progress=False)
    t_explain = time.perf_counter() - t0
    shares = mark_shares(adata, analysis) if rho is not None else {}
    k = mark_prototype(shares) if rho is not None else None
    used = reliance(model_from_checkpoint(payloads[-1], str(files[-1])), data, target) if data.test_marks is not None else {}
    (work / "docs").mkdir(parents=True, exist_ok=True)
    doc_path(work, dataset, rho, seed, n, permuted, explain_with, plant_with).write_text(json.dumps(doc))
    row = {"dataset": dataset, "rho": rho, "seed": seed, "n": n, "permuted": permuted, "target": target, "explain": explain_with,
           "plant": plant_with if rho is not None else "",
           "test_accuracy": result.final_metrics["test_accuracy"], "train_s": round(t_train, 1), "explain_s": round(t_explain, 1), **used,
           "mark_shares": {p: round(v, 3) for p, v in shares.items()}, **judge(doc, data.classes[target], k)}
    return row


def doc_path(work: Path, dataset: str, rho: float | None, seed: int, n: int, permuted: bool, explain_with: str = "",
              plant_with: str = "") -> Path:
    """Where one run's document is saved: a planted run's name carries its plant overrides (a
    hash of them), so that runs of several mark kinds share a ``--work``."""
    variant = f"-{explain_with.replace('=', '-').replace(',', '_')}" if explain_with else ""
    if plant_with and rho is not None:
        variant += "-plant" + hashlib.sha1(plant_with.encode()).hexdigest()[:10]
    return work / "docs" / f"{dataset}-rho{rho}-seed{seed}-n{n}{'-permuted' if permuted else ''}{variant}.json"


def _rows(path: Path) -> list[dict]:
    """The results file's rows (JSON lines)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rejudge(path: Path, work: Path) -> None:
    """Recompute each row's verdict from its saved document and mark prototype."""
    rows = _rows(path)
    out = []
    for r in rows:
        doc = json.loads(doc_path(work, r["dataset"], r["rho"], r["seed"], r["n"], r["permuted"], r.get("explain", ""), r.get("plant", "")).read_text())
        out.append({**r, **judge(doc, doc["classes"][r["target"]], r["mark_prototype"])})
    path.write_text("".join(json.dumps(r) + "\n" for r in out))


RELIANCE = (0.0, 0.02, 0.1, 0.3, 1.01)  # bins of the model's flip rate (:func:`reliance`)


def _share(k: int, n: int) -> str:
    lo, hi = share_interval(k, n)
    return f"{k} of {n} [{lo:.0%}, {hi:.0%}]"


def table(path: Path) -> None:
    rows = _rows(path)
    planted = [r for r in rows if r["rho"] is not None and not r["permuted"]]
    print("| rho | N | seeds | model's reliance: flip (min-max) | worst group | power: mark stated as a shortcut check and located "
          "| mark a finding placed in its corner | a rigid copy stated for the class in the corner "
          "| power: a statement for the class in the mark's corner | mark leads the report | mark prototype exists |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rho in sorted({r["rho"] for r in planted}, reverse=True):
        for n in sorted({r["n"] for r in planted}):
            sel = [r for r in planted if r["rho"] == rho and r["n"] == n]
            if sel:
                flips = [r["flip"] for r in sel if "flip" in r]
                used = f"{100 * np.mean(flips):.1f}% ({100 * min(flips):.1f}-{100 * max(flips):.1f})" if flips else "-"
                worst = f"{100 * np.mean([r['worst_group'] for r in sel if 'flip' in r]):.1f}%" if flips else "-"
                print(f"| {rho:g} | {n} | {len(sel)} | {used} | {worst} | {np.mean([r['detected'] for r in sel]):.0%} | "
                      f"{np.mean([r.get('located_finding', False) for r in sel]):.0%} | {np.mean([r.get('copy_detected', False) for r in sel]):.0%} | "
                      f"{_share(sum(_in_corner(r) for r in sel), len(sel))} | "
                      f"{np.mean([r['lead'] is not None and r['lead'] == r['mark_prototype'] for r in sel]):.0%} | "
                      f"{np.mean([r['mark_prototype'] is not None for r in sel]):.0%} |")
    measured = [r for r in planted if "flip" in r]
    if measured:
        print("\nby the model's reliance on the mark (the share of marked other-class test images it calls the target, "
              "minus that of unmarked ones), all rho pooled:")
        print("| flip | runs | mark stated as a shortcut check | mark a finding placed in its corner | power: a statement for the class in the corner |")
        print("|---|---|---|---|---|")
        for lo, hi in zip(RELIANCE, RELIANCE[1:], strict=False):
            sel = [r for r in measured if lo <= r["flip"] < hi]
            if sel:
                print(f"| {100 * lo:g}-{min(100 * hi, 100):g}% | {len(sel)} | {sum(r['detected'] for r in sel)} of {len(sel)} | "
                      f"{sum(r.get('located_finding', False) for r in sel)} of {len(sel)} | {sum(_in_corner(r) for r in sel)} of {len(sel)} |")
    clean = [r for r in rows if r["rho"] is None and not r["permuted"]]
    perm = [r for r in rows if r["permuted"]]
    if clean:
        print(f"clean data ({len(clean)} runs): false statements (as counted for power) in {_share(sum(_in_corner(r) for r in clean), len(clean))} "
              f"(exact 95% interval); any shortcut check or verified copy in {_share(sum(bool(r['shortcut_checks']) for r in clean), len(clean))}; "
              f"a shortcut check for the target class in the mark's corner in "
              f"{np.mean([bool(r['corner_checks']) for r in clean]):.0%}; a finding for it placed there in "
              f"{np.mean([bool(r.get('corner_findings')) for r in clean]):.0%}; "
              f"{sum(len(r['shortcut_checks']) for r in clean)} checks or copies in all: {[c for r in clean for c in r['shortcut_checks']]}")
    for name, sel in (("clean data", clean), ("permuted labels", perm)):
        pushes = [r["copy_push_max"] for r in sel if r.get("copy_push_max") is not None]
        if pushes:
            print(f"{name}: rigid-copy candidates tested {sum(r['copies_tested'] for r in sel)} in {len(pushes)} runs; the largest push "
                  f"per run {100 * min(pushes):+.1f} to {100 * max(pushes):+.1f} points (median {100 * np.median(pushes):+.1f}); "
                  f"a copy is verified from +5 (faithfulness.copy_min_push)")
    for name, sel in (("planted", planted), ("clean data", clean), ("permuted labels", perm)):
        read = [c for r in sel for c in r.get("copies_read", [])]
        refused = [c for c in read if not c[4]]
        if read:
            print(f"{name}: the paste test passed for {len(read)} candidates in {sum(bool(r.get('copies_read')) for r in sel)} of {len(sel)} "
                  f"runs; the scan's enrichment refused {len(refused)} (corrected p {', '.join(f'{c[3]:.2g}' for c in refused if c[3] is not None)}) "
                  f"and kept {len(read) - len(refused)} (corrected p {', '.join(f'{c[3]:.2g}' for c in read if c[4] and c[3] is not None)})")
    if perm:
        print(f"permuted labels ({len(perm)} runs): any shortcut check or verified copy in {_share(sum(bool(r['shortcut_checks']) for r in perm), len(perm))}, "
              f"any finding in {_share(sum(r['n_findings'] > 0 for r in perm), len(perm))}")
    if planted:
        _figure(planted, path.with_suffix(".png"))


# What counts as stating the mark, per data set. MNIST has blank canvas, so the report can say
# "shortcut check" there; a finding placed in the corner is not specific on MNIST (a clean run
# placed a finding for 7 in the bottom-right, 1 of 5 runs). Photographs have no blank canvas, so
# no shortcut check: a finding for the class placed in the mark's corner is all they can state.
COUNTS_FINDINGS = {"mnist": False, "cifar10": True}


def _in_corner(r: dict) -> bool:
    """The report states something for the target class in the mark's corner: a shortcut check,
    or (photographs, :data:`COUNTS_FINDINGS`) a finding. The same statement is a hit on planted
    data and a false one on clean data."""
    return bool(r["corner_checks"] or (COUNTS_FINDINGS[r["dataset"]] and r.get("corner_findings")))


def setting_match(dataset: str, n: int) -> dict[str, object]:
    """The config values a run must share with the curve for its power line to quote it
    (:data:`i2x.reporting.power.MATCH_KEYS`): the cut's, with N = ``n`` analysed images."""
    from i2x.reporting.power import MATCH_KEYS

    name, cut = SETTINGS[dataset]
    config = load_config(name, f"{cut},data.analysis_size={n}").to_dict()
    return {key: config[key.split(".")[0]][key.split(".")[1]] for key in MATCH_KEYS}


def write_curve(path: Path, curve: Path, fresh: bool = False) -> None:
    """Put this results file's runs into the curve file the report reads (:mod:`i2x.reporting.power`),
    under its data set: per planted run its reliance (flip) and whether the report stated the mark
    (a shortcut check, or a finding placed in the mark's corner), and per clean run whether it stated
    a false one. Runs join those already there for the same cut and N (a run of the same rho and
    seed, or clean seed, replaces its old row), so a file of added seeds (``--first-seed``) or of
    clean runs alone extends the curve. ``fresh``: the data set's curve starts again from this
    file (after a change to what the report states, runs judged the old way do not count)."""
    rows = _rows(path)
    planted = [r for r in rows if r["rho"] is not None and not r["permuted"] and "flip" in r]
    clean = [r for r in rows if r["rho"] is None and not r["permuted"] and "corner_findings" in r]
    dataset = (planted or clean)[0]["dataset"]
    ns = sorted({r["n"] for r in planted + clean})
    n = 2000 if 2000 in ns else ns[0]
    stated_as = ("stated (a shortcut check, a verified rigid copy or a finding for its class, placed in its corner)" if COUNTS_FINDINGS[dataset]
                 else "stated (a shortcut check or a verified rigid copy for its class in its corner)")
    curves = json.loads(curve.read_text()) if curve.is_file() else {}
    old = curves.get(dataset, {})
    same = old.get("setting") == CUT_IN_WORDS[dataset] and old.get("n") == n and not fresh
    runs = {(r["rho"], r["seed"]): r for r in (old.get("runs", []) if same else [])}
    runs.update({(r["rho"], r["seed"]): {"rho": r["rho"], "seed": r["seed"], "flip": r["flip"], "stated": _in_corner(r)}
                 for r in planted if r["n"] == n})
    false = {s: bool(f) for s, f in (old.get("clean", {}).get("seeds", {}).items() if same else [])}
    false.update({str(r["seed"]): _in_corner(r) for r in clean if r["n"] == n})
    entry = {"setting": CUT_IN_WORDS[dataset], "n": n, "stated_as": stated_as, "match": setting_match(dataset, n),
             "runs": sorted(runs.values(), key=lambda r: (-r["rho"], r["seed"])),
             "clean": {"runs": len(false), "false": sum(false.values()), "seeds": dict(sorted(false.items(), key=lambda kv: int(kv[0])))}}
    curves[dataset] = entry
    atomic_write_text(curve, json.dumps(curves, indent=1, sort_keys=True) + "\n")
    print(f"curve: {dataset} ({len(entry['runs'])} planted runs, {entry['clean']['runs']} clean) -> {curve}")


def _figure(planted: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    every = sorted({r["rho"] for r in planted})
    at = {rho: i for i, rho in enumerate(every)}  # evenly spaced: 80%, 90%, 95% and 100% crowd on any continuous scale
    for n in sorted({r["n"] for r in planted}):
        rhos = sorted({r["rho"] for r in planted if r["n"] == n})
        hits = [[_in_corner(r) for r in planted if r["n"] == n and r["rho"] == rho] for rho in rhos]
        power = np.array([np.mean(h) for h in hits])
        band = np.array([share_interval(sum(h), len(h)) for h in hits])  # exact 95%: what a handful of seeds can claim
        ax.errorbar([at[rho] for rho in rhos], power, yerr=[power - band[:, 0], band[:, 1] - power], marker="o", capsize=3,
                    label=f"N = {n} ({', '.join(str(len(h)) for h in hits)} runs; exact 95% interval)")
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(every)), [f"{100 * rho:g}%" for rho in every])
    ax.set_xlim(-0.5, len(every) - 0.5)
    ax.set_xlabel("share of the class's training images with the mark (rho; not to scale)")
    ax.set_ylabel("power: stated in the mark's corner")
    ax.set_ylim(-0.05, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(frameon=False, loc="upper left", fontsize=8)
    ax.set_title(f"{planted[0]['dataset']}: power by planted share" if planted else "")
    measured = [r for r in planted if "flip" in r]
    jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(measured))
    for r, j in zip(measured, jitter, strict=True):
        kind = 2 if r["corner_checks"] else 1 if r.get("corner_findings") else 0
        bx.scatter(max(r["flip"], 1e-3), kind + j, color=("C3", "C2", "C0")[kind], s=18)
    bx.set_xscale("log")
    bx.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    bx.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # a narrow range would print every minor tick in 1e-1 notation
    bx.set_xlim(min([max(r["flip"], 1e-3) for r in measured] + [0.01]) / 1.5, 1.0)
    bx.set_yticks([0, 1, 2], ["nothing in\nthe corner", "a finding in\nthe corner", "a shortcut check\nor copy there"])
    bx.set_ylim(-0.3, 2.3)
    bx.set_xlabel("reliance: flip rate of marked other-class test images")
    bx.set_title("each run: what the report stated in the mark's corner")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"figure: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(SETTINGS), default="mnist")
    ap.add_argument("--rho", default="1,0.5,0.2,0.1,0.05", help="planted shares, comma-separated")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from here (add seeds to a measured set)")
    ap.add_argument("--n", default="2000", help="analysed images, comma-separated")
    ap.add_argument("--controls", type=int, default=-1, help="seeds of the clean and permuted-label controls (-1: --seeds)")
    ap.add_argument("--permuted", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the permuted-label control (--no-permuted: the clean control only)")
    ap.add_argument("--clean", action=argparse.BooleanOptionalAction, default=True,
                    help="run the clean control (--no-clean with --permuted: the permuted-label control only)")
    ap.add_argument("--explain", default="", help="explain overrides for the analysis only (the models are reused), "
                    "e.g. explain.n_prototypes=128; kept in each row")
    ap.add_argument("--target", type=int, default=7, help="the planted class")
    ap.add_argument("--plant", default="", help="plant overrides on top of the fixed corner square, e.g. "
                    "plant.position=random,plant.region=12 (use another --work and --out)")
    ap.add_argument("--work", default="bench/out/power-work")
    ap.add_argument("--out", default="")
    ap.add_argument("--table", default="", help="print the table and draw the figure of a results file, then stop")
    ap.add_argument("--rejudge", action="store_true", help="with --table: judge again from the saved documents under --work "
                    "(after a change to the report's claims; the explanations are not recomputed)")
    ap.add_argument("--curve", default="", help="with --table: write the measured curve the report reads "
                    "(i2x/reporting/power_curves.json)")
    ap.add_argument("--fresh-curve", action="store_true", help="with --curve: replace the data set's curve instead of joining "
                    "it (after a rule change, the runs judged the old way are dropped)")
    args = ap.parse_args()
    if args.table:
        if args.rejudge:
            rejudge(Path(args.table), Path(args.work))
        table(Path(args.table))
        if args.curve:
            write_curve(Path(args.table), Path(args.curve), fresh=args.fresh_curve)
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out or f"bench/out/power-{args.dataset}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["rho"], r["seed"], r["n"], r["permuted"]) for r in _rows(out) if r.get("explain", "") == args.explain} if out.is_file() else set()
    controls = args.seeds if args.controls < 0 else args.controls
    jobs = [(float(rho), s, int(n), False) for s in range(args.first_seed, args.first_seed + args.seeds) for rho in args.rho.split(",") for n in args.n.split(",")]
    jobs += [(None, s, int(n), perm) for s in range(args.first_seed, args.first_seed + controls) for perm in (False, True)[1 - args.clean:1 + args.permuted] for n in args.n.split(",")]
    todo = [j for j in jobs if j not in done]
    start = time.perf_counter()
    for i, (rho, seed, n, perm) in enumerate(todo):
        row = one(args.dataset, rho, seed, n, Path(args.work), perm, args.target, args.explain, args.plant)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        elapsed = time.perf_counter() - start
        eta = elapsed / (i + 1) * (len(todo) - i - 1)
        print(f"[{i + 1}/{len(todo)}] rho={rho} seed={seed} N={n} permuted={perm}: detected={row['detected']} "
              f"(P{row['mark_prototype']}), shortcut checks {row['shortcut_checks']}, findings {row['n_findings']}, test acc {row['test_accuracy']:.4f}, "
              f"train {row['train_s']} s, explain {row['explain_s']} s; ETA {eta / 60:.1f} min", flush=True)
    table(out)


if __name__ == "__main__":
    main()
