"""Figures of a run's progress rather than of the explanation: the training curves and
checkpoints, the study's strategies against their controls, and Optuna's own plots. The
drawing rules (Agg, literal text) are :mod:`i2x.reporting.figures`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from i2x.reporting.figures import literal_text, plt, save_figure


@literal_text
def plot_training(checkpoints: Sequence[Any], history: Sequence[tuple[int, dict[str, float]]], path: Path) -> Path:
    """Training dynamics: loss and accuracy per logged step, validation accuracy per checkpoint,
    checkpoints marked as vertical lines."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.6))
    train_pts = [(s, m) for s, m in history if "loss" in m]
    if train_pts:
        steps = [s for s, _ in train_pts]
        ax_loss.plot(steps, [m["loss"] for _, m in train_pts], label="train loss")
        ax_acc.plot(steps, [m["accuracy"] for _, m in train_pts], label="train accuracy", alpha=0.7)
    ck_steps = [c.step for c in checkpoints]
    ax_loss.plot(ck_steps, [c.metrics.get("val_loss", np.nan) for c in checkpoints], "o-", label="val loss")
    ax_acc.plot(ck_steps, [c.metrics.get("val_accuracy", np.nan) for c in checkpoints], "o-", label="val accuracy")
    for ax in (ax_loss, ax_acc):
        for s in ck_steps:
            ax.axvline(s, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("optimizer step (dotted: checkpoints)")
        ax.legend(loc="best", fontsize=8)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    return save_figure(fig, path)


@literal_text
def plot_strategies(summary: dict[str, Any], order: Sequence[str], path: Path) -> Path:
    """Test accuracy and focal-pair confusions per strategy: mean +- std and every seed."""
    names = [n for n in order if n in summary["strategies"]]
    rows = [summary["strategies"][n] for n in names]
    fig, (ax_acc, ax_foc) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(names))
    colors = ["tab:green", "tab:grey", "tab:orange", "tab:purple", "tab:brown"][: len(names)]
    for ax, key, label in ((ax_acc, "accuracy", "test accuracy (%)"), (ax_foc, "focal_confusions", f"{summary['focal_pair']} confusions (test)")):
        scale = 100 if key == "accuracy" else 1
        means = [scale * np.mean(r[key]) for r in rows]
        stds = [scale * (np.std(r[key], ddof=1) if len(r[key]) > 1 else 0) for r in rows]
        ax.bar(x, means, yerr=stds, color=colors, alpha=0.6, capsize=4)
        for i, r in enumerate(rows):
            ax.plot([i] * len(r[key]), [scale * v for v in r[key]], "k.", ms=5)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=7, rotation=15)
        ax.set_ylabel(label)
        lo = min(scale * min(r[key]) for r in rows)
        hi = max(scale * max(r[key]) for r in rows)
        pad = max(0.5 * (hi - lo), 0.5 if key == "accuracy" else 1)
        ax.set_ylim(max(0, lo - pad), hi + pad)
    fig.suptitle("Fine-tuning strategies on the test set (bars: mean +- std over seeds; dots: seeds)", fontsize=9)
    return save_figure(fig, path)


@literal_text
def plot_optuna(study: Any, out: Path) -> list[Path]:
    """Optuna's own figures: optimisation history, parameter importances, Pareto front
    (two objectives). A figure Optuna cannot draw yet (too few trials) is skipped with a
    note file that says why."""
    import warnings

    import optuna
    import optuna.visualization.matplotlib as ov
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    two = len(study.directions) > 1
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    caveat = f" (from {n_complete} completed trials{'; too few to rank parameters reliably' if n_complete < 20 else ''})"
    names = [n.replace("_", " ") for n in (study.metric_names or ["val accuracy", "target-pair confusions"])]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

    def first(t: Any) -> float:  # importances rank parameters by how they reach LOW target values
        return -t.values[0] if maximize else t.values[0]

    figures = {"optimization_history.png": lambda: ov.plot_optimization_history(study, target=(lambda t: t.values[0]) if two else None, target_name=names[0]),
               "param_importances.png": lambda: ov.plot_param_importances(study, target=first if two else None, target_name=names[0])}
    if two:
        figures["pareto_front.png"] = lambda: ov.plot_pareto_front(study, target_names=names[:2])
    written = []
    for name, draw in figures.items():
        # Optuna's plots call plt.style.use("ggplot"), which would grey every later figure:
        # rc_context restores the style when the figure is saved.
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ExperimentalWarning)
            warnings.filterwarnings("ignore", message=".*(PedAnovaImportanceEvaluator|target_name).*")  # handled: first(), names
            try:
                ax = draw()
            except (ValueError, RuntimeError) as exc:  # e.g. importances need 2+ completed trials
                (out / f"{name}.skipped.txt").write_text(f"{name} not drawn: {exc}\n")
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            if name == "param_importances.png":
                fig.axes[0].set_title(fig.axes[0].get_title() + caveat, fontsize=9)
            written.append(save_figure(fig, out / name))
    return written


@literal_text
def plot_evaluation(confusion: np.ndarray, per_class: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """The test confusion matrix (counts, row = true class) beside the accuracy per class."""
    m = len(classes)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(4.8 + 0.45 * m, 0.42 * m + 1.6), gridspec_kw={"width_ratios": [m, 3]})
    ax.imshow(np.log1p(confusion), cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > confusion.max() / 2 else "black")
    ax.set_xticks(range(m), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(m), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix (counts)", fontsize=8)
    bars = bx.barh(range(m), per_class, color="tab:blue")
    bx.bar_label(bars, [f"{100 * a:.1f}%" if a == a else "-" for a in per_class], padding=2, fontsize=6)
    bx.set_yticks(range(m), classes, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlim(0, 1.18)  # from 0: a bar that starts at the lowest class's accuracy looks empty; room for the labels
    bx.set_xticks([0, 0.5, 1.0], ["0", "50%", "100%"], fontsize=7)
    bx.set_title("Accuracy per class", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@literal_text
def plot_confused(images: np.ndarray, confused: Sequence[tuple[int, int, int]], examples: Sequence[Sequence[int]],
                  classes: Sequence[str], path: Path) -> Path | None:
    """The most-confused pairs: a row each, test images of the true class predicted as the other."""
    from i2x.reporting.figures import show_image

    if not confused:
        return None
    per = max(len(e) for e in examples)
    fig, axes = plt.subplots(len(confused), per, figsize=(1.3 * per + 1.6, 1.35 * len(confused)), squeeze=False)
    for r, ((a, b, n), rows) in enumerate(zip(confused, examples, strict=True)):
        for c in range(per):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(rows):
                ax.axis("on")
                show_image(ax, images[rows[c]])
        axes[r, 0].set_title(f"true {classes[a]}, predicted {classes[b]} ({n} test images)", fontsize=7, loc="left")
    fig.suptitle("Most-confused pairs on the test split", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@literal_text
def plot_repair(summary: dict[str, Any], path: Path) -> Path:
    """Worst-group and average test accuracy per repair strategy and baseline: mean +- std
    over seeds; strategies that read group labels hatched."""
    names = list(summary["strategies"])
    rows = [summary["strategies"][n] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    x = np.arange(len(names))
    colors = ["tab:green" if n.startswith("i2x-") else "tab:grey" for n in names]
    for ax, key, label in ((axes[0], "worst", "worst-group accuracy (%)"), (axes[1], "accuracy", "average accuracy (%)")):
        means = np.array([100 * r[f"{key}_mean"] for r in rows])
        stds = np.array([100 * r[f"{key}_std"] for r in rows])
        bars = ax.bar(x, means, yerr=stds, color=colors, alpha=0.7, capsize=4)
        for bar, r in zip(bars, rows, strict=True):
            if r["true_groups"]:
                bar.set_hatch("//")
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=7, rotation=20)
        ax.set_ylabel(label)
        lo, hi = float(np.min(means - stds)), float(np.max(means + stds))
        ax.set_ylim(max(0.0, lo - 0.2 * (hi - lo) - 1), min(100.0, hi + 0.1 * (hi - lo) + 1))
    by = "true groups" if summary["groups_source"] != "i2x" else "i2x groups"
    fig.suptitle(f"Repair on the test set, scored by the {by} (green: i2x, no group label read; hatched: reads group labels; "
                 "mean +- std over seeds)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@literal_text
def plot_changed(before: np.ndarray, after: np.ndarray, captions: Sequence[str], title: str, path: Path) -> Path:
    """Images (float, in [0, 1]) before (top row) and after (bottom row) a repair strategy
    changed them; one row when nothing changed."""
    from i2x.reporting.figures import show_image

    before, after = ((np.clip(a, 0, 1) * 255).round().astype(np.uint8) for a in (before, after))
    n = len(before)
    same = bool(np.array_equal(before, after))
    rows = 1 if same else 2
    fig, axes = plt.subplots(rows, max(n, 1), figsize=(1.6 * max(n, 1) + 0.4, 1.8 * rows + 0.5), squeeze=False)
    for i in range(max(n, 1)):
        for r in range(rows):
            axes[r, i].axis("off")
        if i >= n:
            continue
        show_image(axes[0, i], before[i])
        axes[0, i].set_title(captions[i], fontsize=6)
        if not same:
            show_image(axes[1, i], after[i])
    if not same:
        axes[0, 0].text(-0.15, 0.5, "before", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
        axes[1, 0].text(-0.15, 0.5, "after", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
