"""All drawing (matplotlib, Agg). Compute code never draws; these take arrays and records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


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
    return _save(fig, path)


def _show_image(ax: Any, img: np.ndarray) -> None:
    """``img``: (C, H, W) uint8."""
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img.transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_overlays(
    images: np.ndarray, heat: np.ndarray, labels: np.ndarray, conf: np.ndarray, classes: Sequence[str], title: str, path: Path, per_class: int
) -> Path:
    """Saliency overlays: one column per class, ``per_class`` samples down each column.

    Args:
        images: ``(n, C, H, W)`` uint8, ordered class by class.
        heat: ``(n, H, W)`` maps in [0, 1] at image size.
        conf: ``(n,)`` confidence in the true class.
    """
    present = list(dict.fromkeys(int(c) for c in labels))
    fig, axes = plt.subplots(per_class, len(present), figsize=(1.45 * len(present), 1.6 * per_class + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    row_of: dict[int, int] = {}
    for i, label in enumerate(labels):
        col = present.index(int(label))
        row = row_of.get(col, 0)
        row_of[col] = row + 1
        if row >= per_class:
            continue
        ax = axes[row, col]
        ax.axis("on")
        _show_image(ax, images[i])
        ax.imshow(heat[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{classes[label]}\np={conf[i]:.2f}" if row == 0 else f"p={conf[i]:.2f}", fontsize=7)
    fig.suptitle(title + "  (p: confidence in the true class)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_gallery(
    images: np.ndarray,
    prototypes: Sequence[dict[str, Any]],
    classes: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """Prototype gallery: per prototype its exemplar patches and coverage per class.

    Args:
        images: the analysis images ``(N, C, H, W)`` uint8 (exemplars index into them).
        prototypes: rows of the explanation's ``prototypes`` list (one page of them).
    """
    n_ex = max((len(p["exemplars"]) for p in prototypes), default=1) or 1
    rows = max(1, len(prototypes))
    height = 1.05 * rows + 0.6
    fig = plt.figure(figsize=(1.0 * n_ex + 3.2, height))
    grid = fig.add_gridspec(rows, n_ex + 3, top=1 - 0.45 / height, bottom=0.5 / height)
    for r, proto in enumerate(prototypes):
        for j, ex in enumerate(proto["exemplars"]):
            ax = fig.add_subplot(grid[r, j])
            y0, x0, y1, x1 = ex["box"]
            _show_image(ax, images[ex["sample"]][:, y0:y1, x0:x1])
            if j == 0:
                role = "U " if proto["uncertain"] else ""
                role += "S " if proto["shared_by"] else ""
                role += "Sp" if proto["specialised_for"] else ""
                ax.set_ylabel(f"P{proto['id']} {role}", fontsize=8, rotation=0, ha="right", va="center")
        ax = fig.add_subplot(grid[r, n_ex:])
        cov = [proto["coverage"][c] for c in classes]
        ax.bar(range(len(classes)), cov, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes if r == rows - 1 else [], fontsize=6, rotation=90)
    fig.suptitle(title + "\nU uncertain, S shared, Sp specialised; bars: share of each class's samples containing it",
                 fontsize=8, y=1 - 0.05 / height)
    return _save(fig, path)


def plot_strategies(summary: dict[str, Any], order: Sequence[str], path: Path) -> Path:
    """Test accuracy and focal-pair confusions per strategy: mean +- std and every seed."""
    names = [n for n in order if n in summary["strategies"]]
    rows = [summary["strategies"][n] for n in names]
    fig, (ax_acc, ax_foc) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(names))
    colors = ["tab:green", "tab:purple", "tab:grey", "tab:orange"][: len(names)]
    for ax, key, label in ((ax_acc, "accuracy", "test accuracy (%)"), (ax_foc, "focal_confusions", f"{summary['focal_pair']} confusions (test)")):
        scale = 100 if key == "accuracy" else 1
        means = [scale * np.mean(r[key]) for r in rows]
        stds = [scale * (np.std(r[key], ddof=1) if len(r[key]) > 1 else 0) for r in rows]
        ax.bar(x, means, yerr=stds, color=colors, alpha=0.6, capsize=4)
        for i, r in enumerate(rows):
            ax.plot([i] * len(r[key]), [scale * v for v in r[key]], "k.", ms=5)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel(label)
        lo = min(scale * min(r[key]) for r in rows)
        hi = max(scale * max(r[key]) for r in rows)
        pad = max(0.5 * (hi - lo), 0.5 if key == "accuracy" else 1)
        ax.set_ylim(max(0, lo - pad), hi + pad)
    fig.suptitle("Fine-tuning strategies on the test set (bars: mean +- std over seeds; dots: seeds)", fontsize=9)
    return _save(fig, path)


def plot_optuna(study: Any, out: Path) -> list[Path]:
    """Optuna's own figures: optimisation history, parameter importances, Pareto front
    (two objectives). A figure Optuna cannot draw yet (too few trials) is skipped with a
    note file that says why."""
    import warnings

    import optuna.visualization.matplotlib as ov
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    two = len(study.directions) > 1
    figures = {"optimization_history.png": lambda: ov.plot_optimization_history(study, target=(lambda t: t.values[0]) if two else None, target_name="val accuracy"),
               "param_importances.png": lambda: ov.plot_param_importances(study, target=(lambda t: t.values[0]) if two else None)}
    if two:
        figures["pareto_front.png"] = lambda: ov.plot_pareto_front(study, target_names=["val accuracy", "target-pair confusions"])
    written = []
    for name, draw in figures.items():
        try:
            ax = draw()
        except (ValueError, RuntimeError) as exc:  # e.g. importances need 2+ completed trials
            (out / f"{name}.skipped.txt").write_text(f"{name} not drawn: {exc}\n")
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        written.append(_save(fig, out / name))
    return written
