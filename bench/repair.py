"""Repair a planted shortcut (issue 22): the i2x strategies against ERM, JTT, DFR and the oracle
on worst-group accuracy, each fine-tuning the same final model at the same budget, over
training seeds (a new model and plant each).

Per seed: train on the planted data (a mark in ``rho`` of one class's training images, the test
split marked in half of every class), explain it, and run what ``i2x tune`` runs (the product's
code, :mod:`i2x.tuning.guided`): act on the report's lead shortcut check with the repair study,
then every strategy and baseline once, scored on the test split by the true groups. Where the
report states no shortcut check, i2x does nothing (that is what tune does), so its rows are the
final model's. i2x never reads a group label; ``dfr`` and ``oracle`` do (marked). Results go to
``--out`` (JSON lines; a rerun skips finished seeds) and a table with paired CIs over seeds.

    python bench/repair.py --dataset mnist --seeds 5
    python bench/repair.py --table bench/out/repair-mnist.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2x.explanation.document import explain  # noqa: E402
from i2x.platform.config_io import load_config  # noqa: E402
from i2x.repair.baselines import JTT_LAMBDAS, READS_GROUP_LABELS  # noqa: E402
from i2x.repair.choice import (  # noqa: E402
    best_per_strategy,
    choose_jtt,
    chosen_strategy,
    make_objective,
    seed_trials,
)
from i2x.repair.context import RepairContext  # noqa: E402
from i2x.repair.evaluation import RANDOM_TARGET, evaluate, random_target  # noqa: E402
from i2x.repair.finding import Finding, acting_on, copy_floor, lead_finding  # noqa: E402
from i2x.repair.strategies import I2X_STRATEGIES  # noqa: E402
from i2x.reporting.claims import copy_checks, shortcut_checks  # noqa: E402
from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint  # noqa: E402
from i2x.training.data import load_data  # noqa: E402
from i2x.training.groups import groups_of  # noqa: E402
from i2x.training.loop import resolve_device, run_folder, train  # noqa: E402
from i2x.training.models import build_model  # noqa: E402
from i2x.tuning.study import assign_images  # noqa: E402

SETTINGS = {
    "mnist": ("mnist", "data.train_limit=12000,train.epochs=2,explain.null_permutations=0"),
    "cifar10": ("cifar10", "data.train_limit=10000,model.name=cnn,model.width=32,train.epochs=8,train.batch_size=256,"
                "train.lr=0.05,train.lr_schedule=onecycle,train.label_smoothing=0,train.bias_lr_scale=1,train.lookahead_every=0,"
                "train.tta_level=0,data.augment=false,explain.n_prototypes=64,explain.null_permutations=0"),
}
PLANT = "plant.kind=shortcut,plant.mark=square,plant.position=fixed,plant.corner=br,plant.test=0.5"


def prepare(dataset: str, seed: int, rho: float, target: int, lr: float, work: Path, extra: str = "") -> tuple[RepairContext, Finding | None, dict, float]:
    """Train on the planted data, explain it, and build what tune's repair needs: the repair
    context, the report's lead shortcut check (None: no check), the explanation, explain's seconds."""
    name, cut = SETTINGS[dataset]
    config = load_config(name, f"work_dir={work},seed={seed},{cut},{PLANT},plant.classes=[{target}],plant.rho={rho},"
                               f"tune.seeds=1,tune.epoch_samples=0,tune.repair_lr={lr}" + (f",{extra}" if extra else ""))
    data = load_data(config.data, config.seed, config.plant)
    device = resolve_device("cpu")
    result = train(config, data, run_folder(config), progress=False)
    files = list_checkpoints(result.folder)
    payloads = [read_checkpoint(f) for f in files]
    infos = [{"step": c.step, "epoch": c.epoch, "val_accuracy": c.metrics["val_accuracy"]} for c in result.checkpoints]
    t0 = time.perf_counter()
    analysis, doc = explain(len(files), lambda t: model_from_checkpoint(payloads[t], str(files[t])), infos, data, config, device,
                            target_layer=payloads[-1]["target_layer"], progress=False)
    t_explain = time.perf_counter() - t0
    final = payloads[-1]
    meta, layer = final["data"], final["target_layer"]

    def build() -> torch.nn.Module:
        return build_model(config.model, meta["channels"], len(meta["classes"]), meta["mean"], meta["std"])

    model = model_from_checkpoint(final, str(files[-1]))

    def plain(x: torch.Tensor) -> torch.Tensor:
        return assign_images(model, layer, x, analysis.protos, 1000, device)

    finding = lead_finding(shortcut_checks(doc), copy_checks(doc), list(data.classes))
    assignment, assign = plain(data.train_x), plain
    if finding is not None:  # as tune acts: on the check's rigid copy
        finding, assignment, assign = acting_on(finding, data.train_x, data.train_y, assignment, plain, config.faithfulness.copy_tolerance,
                                             copy_floor(doc, finding, config.explain.shortcut_rigid))
    early = next(p for p, c in zip(payloads, result.checkpoints, strict=True) if c.epoch >= 1.0)
    ctx = RepairContext(config=config, data=data, build=build, state=final["model"], early_state=early["model"],
                        assignment=assignment, finding=finding or Finding(-1, 0, "", "none"), device=device,
                        test_groups=groups_of(config.plant, data.classes, data.test_y.numpy(), data.test_marks.numpy()),
                        true_train=(2 * data.train_y + (data.train_marks[:, 0] >= 0).long()).numpy(), assign=assign)
    return ctx, finding, doc, t_explain


def _in_corner(where: dict) -> bool:
    """The lead check sits on the planted mark: its region, or where its rigid copy is, is the mark's corner."""
    return any(str(where.get(k) or "").startswith("bottom-right") for k in ("region", "rigid_at"))


def one_seed(dataset: str, seed: int, rho: float, target: int, trials: int, lr: float, work: Path, extra: str = "") -> list[dict]:
    import optuna

    ctx, finding, doc, t_explain = prepare(dataset, seed, rho, target, lr, work, extra)
    data = ctx.data
    t0 = time.perf_counter()
    chosen = {"erm": {"params": {}}, "jtt": {"params": choose_jtt(ctx, JTT_LAMBDAS)}, "dfr": {"params": {}}, "dfr-classes": {"params": {}},
              "oracle": {"params": {}}}
    if finding is not None:
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.TPESampler(seed=seed))
        seed_trials(study, ctx)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(make_objective(ctx), n_trials=trials)
        chosen |= best_per_strategy(study, ctx)
        chosen |= random_target(chosen)
    t_study = time.perf_counter() - t0
    results = evaluate(ctx, chosen, ctx.test_groups, {})
    for name in I2X_STRATEGIES:  # no finding: tune does nothing, the model stays as it was
        results.setdefault(name, results["before"])
    pick = chosen_strategy(chosen)  # what tune hands the user, chosen on the held-out set
    results["i2x (chosen)"] = results[pick] if pick else results["before"]
    where = ""
    if finding is not None:
        box = np.argwhere(ctx.cells[data.train_marks[:, 0] >= 0].any(0).numpy())
        where = f"cells {box.min(0).tolist()}-{box.max(0).tolist()}" if len(box) else "not on marked images"
    rows = []
    for name, runs in results.items():
        r = runs[0]
        rows.append({"dataset": dataset, "seed": seed, "rho": rho, "strategy": "final (before)" if name == "before" else name,
                     "true_groups": name in READS_GROUP_LABELS, "fit": r.get("fit"), "seconds": r["seconds"], "accuracy": r["accuracy"],
                     "worst_group": r["worst_group"], "gap": r["gap"], "groups": r["groups"],
                     "params": chosen.get(name, {}).get("params", {}), "declined": bool(chosen.get(name, {}).get("declined")),
                     "heldout": chosen.get(name, {}).get("values"), "chosen": pick, "acted": finding is not None or not name.startswith("i2x-"),
                     "finding": None if finding is None else (finding.copy or {}).get("prototype", finding.prototype), "finding_class": None if finding is None else finding.class_name,
                     "finding_is_mark": bool(finding is not None and finding.cls == target
                                             and _in_corner({"region": finding.copy["where"]} if finding.copy
                                                            else doc["prototypes"][finding.prototype]["where"])),
                     "finding_is_copy": bool(finding is not None and finding.copy and "prototype" not in finding.copy),
                     "mark_cells_with_finding": where, "explain_s": round(t_explain, 1), "study_s": round(t_study, 1), "set": extra,
                     "heldout_take_out": ctx.config.tune.heldout_take_out, "refit_take_out": ctx.config.tune.refit_take_out})
    return rows


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    order = ["final (before)", "erm", "jtt", "dfr", "dfr-classes", "oracle", "i2x-augment", "i2x-groups", "i2x-dfr", "i2x (chosen)",
             RANDOM_TARGET]
    seeds = sorted({r["seed"] for r in rows})
    print(f"{rows[0]['dataset']}, rho {rows[0]['rho']}, seeds {seeds}; findings: {sorted({(r['seed'], r.get('finding')) for r in rows})}")
    print("| strategy | reads group labels | worst-group acc | average acc | gap aligned-conflicting | vs ERM (worst, paired) | "
          "vs JTT (worst, paired) | vs DFR (worst, paired) | vs DFR by class (worst, paired) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    by = {(r["strategy"], r["seed"]): r for r in rows}

    def paired(a: str, b: str, key: str = "worst_group") -> str:
        d = [by[(a, s)][key] - by[(b, s)][key] for s in seeds if (a, s) in by and (b, s) in by]
        if len(d) < 2:
            return "-"
        rng = np.random.default_rng(0)
        boot = [np.mean(rng.choice(d, len(d))) for _ in range(2000)]
        return f"{100 * np.mean(d):+.1f} [{100 * np.quantile(boot, 0.025):+.1f}, {100 * np.quantile(boot, 0.975):+.1f}]"

    for name in order:
        sel = [r for r in rows if r["strategy"] == name]
        if not sel:
            continue
        w, a = np.array([r["worst_group"] for r in sel]), np.array([r["accuracy"] for r in sel])
        g = np.array([r["gap"] for r in sel], dtype=float)
        print(f"| {name} | {'yes' if sel[0]['true_groups'] else 'no'} | {100 * w.mean():.1f} +- {100 * w.std(ddof=1) if len(w) > 1 else 0:.1f} | "
              f"{100 * a.mean():.2f} +- {100 * a.std(ddof=1) if len(a) > 1 else 0:.2f} | {100 * np.nanmean(g):+.1f} | "
              f"{paired(name, 'erm') if name != 'erm' else '-'} | {paired(name, 'jtt') if name != 'jtt' else '-'} | "
              f"{paired(name, 'dfr') if name != 'dfr' else '-'} | {paired(name, 'dfr-classes') if name != 'dfr-classes' else '-'} | "
              f"{np.mean([r['seconds'] for r in sel]):.0f} |")
    from i2x.repair.summary import trained_on

    print("\nWhat each row trained on (seed " + str(seeds[0]) + "):")
    for name in order:
        sel = [r for r in rows if r["strategy"] == name and r["seed"] == seeds[0]]
        if sel and name not in ("final (before)", "i2x (chosen)"):
            print(f"- {name}: {trained_on(name, [sel[0].get('fit')])}")
    picks = []
    for s_ in seeds:
        ok = {n: by[(n, s_)]["worst_group"] for n in I2X_STRATEGIES if (n, s_) in by and not by[(n, s_)]["declined"] and by[(n, s_)]["acted"]}
        chosen = by.get(("i2x (chosen)", s_), {}).get("chosen")
        if ok and chosen:
            best = max(ok, key=ok.get)
            picks.append((s_, chosen, best, 100 * (ok[best] - ok[chosen])))
    if picks:
        agree = sum(1 for _, c, b, r in picks if c == b or r < 2.0)
        print(f"\nThe choice against the test split's ranking of the i2x strategies tune kept: {agree} of {len(picks)} seeds chose the "
              "test's best or one within 2 points (" + "; ".join(f"seed {s_}: chose {c}, test's best {b}, regret {r:.1f}" for s_, c, b, r in picks) + ")")
    if any(r["strategy"] == RANDOM_TARGET for r in rows):
        print(f"\ni2x (chosen) vs {RANDOM_TARGET} (its settings at random cells), worst group, paired: {paired('i2x (chosen)', RANDOM_TARGET)}; "
              f"average accuracy: {paired('i2x (chosen)', RANDOM_TARGET, 'accuracy')}")
    acted = sorted({r["seed"] for r in rows if r["strategy"].startswith("i2x-") and r["acted"]})
    marks = sorted({r["seed"] for r in rows if r.get("finding_is_mark")})
    print(f"\ni2x acted on a finding in seeds {acted} (the mark in {marks}); elsewhere its rows are the final model's. "
          "CIs: bootstrap over seeds, paired.")
    figure(rows, [n for n in order if any(r["strategy"] == n for r in rows)], path.with_suffix(".png"))


def figure(rows: list[dict], names: list[str], out: Path) -> None:
    """Worst-group and average test accuracy per strategy: one dot per training seed (the same
    colour for the same seed across strategies; a cross where tune declined the strategy), the
    mean as a bar; the strategies that read true group labels are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
    for ax, key, title in zip(axes, ("worst_group", "accuracy"), ("worst-group test accuracy", "average test accuracy"), strict=True):
        for i, name in enumerate(names):
            sel = {r["seed"]: 100 * r[key] for r in rows if r["strategy"] == name}
            declined = {r["seed"] for r in rows if r["strategy"] == name and r.get("declined")}
            truth = any(r["true_groups"] for r in rows if r["strategy"] == name)
            ax.bar(i, np.mean(list(sel.values())), color="0.85", edgecolor="0.4", hatch="//" if truth else None)
            for j, s in enumerate(seeds):
                if s in sel:
                    ax.scatter(i + (j - (len(seeds) - 1) / 2) * 0.1, sel[s], color=f"C{j % 10}", s=16, zorder=3, marker="x" if s in declined else "o",
                               label=f"seed {s}" if i == 0 else None)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("%")
        ax.set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(seeds), frameon=False, fontsize=8)
    fig.suptitle(f"{rows[0]['dataset']}, mark on {100 * rows[0]['rho']:g}% of one class; hatched: reads true group labels; "
                 "x: declined by do-no-harm (the model as trained)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=110)
    print(f"figure: {out}")


def add_planted_args(ap: argparse.ArgumentParser, seeds: int, work: str) -> None:
    """The planted cut and fine-tuning rate that :func:`prepare` takes (this bench and bench/selection.py)."""
    ap.add_argument("--dataset", choices=sorted(SETTINGS), default="mnist")
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run from this one (fresh seeds check a rule chosen on others)")
    ap.add_argument("--set", default="", help="extra config overrides, e.g. tune.heldout_take_out=mean (written to every row)")
    ap.add_argument("--rho", type=float, default=0.95)
    ap.add_argument("--target", type=int, default=7)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--work", default=work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_planted_args(ap, seeds=5, work="bench/out/power-work")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--out", default="")
    ap.add_argument("--table", default="")
    args = ap.parse_args()
    if args.table:
        table(Path(args.table))
        return
    out = Path(args.out or f"bench/out/repair-{args.dataset}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["seed"] for line in out.read_text().splitlines()} if out.is_file() else set()
    start = time.perf_counter()
    todo = [s for s in range(args.first_seed, args.first_seed + args.seeds) if s not in done]
    for i, seed in enumerate(todo):
        rows = one_seed(args.dataset, seed, args.rho, args.target, args.trials, args.lr, Path(args.work), args.set)
        with out.open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        eta = (time.perf_counter() - start) / (i + 1) * (len(todo) - i - 1)
        print(f"[{i + 1}/{len(todo)}] seed {seed}: " + "; ".join(f"{r['strategy']} worst {r['worst_group']:.3f} avg {r['accuracy']:.4f}"
                                                          for r in rows) + f"; ETA {eta / 60:.1f} min", flush=True)
    table(out)


if __name__ == "__main__":
    main()
