"""All drawing (matplotlib, Agg). Compute code never draws; these take arrays and records."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])


def literal_text(fn: F) -> F:
    """Draw every string as given: class names come from folder names, and matplotlib would
    read ``$...$`` in one as mathtext (a class named ``$\\badcmd{$`` failed after the whole
    analysis). Set for the figure being drawn only, not globally."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def show_image(ax: Any, img: np.ndarray) -> None:
    """``img``: (C, H, W) uint8."""
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img.transpose(1, 2, 0))
    ax.set_xticks([])
    ax.set_yticks([])


@literal_text
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
    fig, axes = plt.subplots(per_class, len(present), figsize=(1.45 * len(present), 1.85 * per_class + 0.5), squeeze=False)
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
        show_image(ax, images[i])
        ax.imshow(heat[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{classes[label]}\np={conf[i]:.2f}" if row == 0 else f"p={conf[i]:.2f}", fontsize=7)
    fig.suptitle(title + "  (p: confidence in the true class)", fontsize=9)
    fig.tight_layout(h_pad=1.2)
    return save_figure(fig, path)


GALLERY_PAGE = 16  # prototypes per gallery figure: 128 tiles in one figure are unreadable


def gallery_pages(prototypes: Sequence[dict[str, Any]], limit: int | None = None) -> list[list[dict[str, Any]]]:
    """The prototypes in display order (uncertain, shared, specialised, then the most
    frequent), cut into pages of :data:`GALLERY_PAGE`; the first ``limit`` pages if given."""
    order = sorted(prototypes, key=lambda p: (not p["uncertain"], not p["shared_by"], not p["specialised_for"], -p["n_samples"], p["id"]))
    return [order[i : i + GALLERY_PAGE] for i in range(0, len(order), GALLERY_PAGE)][:limit]


@literal_text
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
    height = 1.35 * rows + 0.6
    fig = plt.figure(figsize=(1.0 * n_ex + 3.2, height))
    grid = fig.add_gridspec(rows, n_ex + 3, top=1 - 0.45 / height, bottom=0.5 / height)
    for r, proto in enumerate(prototypes):
        for j, ex in enumerate(proto["exemplars"]):
            ax = fig.add_subplot(grid[r, j])
            _show_exemplar(ax, images, ex)
            if j == 0:
                role = "U " if proto["uncertain"] else ""
                role += "S " if proto["shared_by"] else ""
                role += "Sp" if proto["specialised_for"] else ""
                role += "bg" if proto.get("background") else ""
                ax.set_ylabel(f"P{proto['id']} {role}", fontsize=8, rotation=0, ha="right", va="center")
        ax = fig.add_subplot(grid[r, n_ex:])
        cov = [proto["coverage"][c] for c in classes]
        ax.bar(range(len(classes)), cov, color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 1], ["0", "100%"], fontsize=5)
        ax.yaxis.tick_right()
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels([str(c)[:8] for c in classes], fontsize=5, rotation=90)
    fig.suptitle(title + "\nU uncertain, S shared, Sp specialised, bg background; red box: the prototype's cell; bars: share of each class's samples containing it",
                 fontsize=8, y=1 - 0.05 / height)
    return save_figure(fig, path)


def _show_exemplar(ax: Any, images: np.ndarray, ex: dict[str, Any]) -> None:
    """An exemplar's crop (the cell with context) with the cell itself outlined in red."""
    from matplotlib.patches import Rectangle

    y0, x0, y1, x1 = ex.get("crop", ex["box"])
    by0, bx0, by1, bx1 = ex["box"]
    # every crop the same size: a square around the cell's centre as wide as the crop's widest
    # unclipped side, grey where it runs past the image's border (crops at a border were smaller)
    cy, cx = (by0 + by1) / 2, (bx0 + bx1) / 2
    half = int(np.ceil(max(cy - y0, y1 - cy, cx - x0, x1 - cx)))
    img = images[ex["sample"]]
    pad = np.pad(img, ((0, 0), (half, half), (half, half)), constant_values=128)
    oy, ox = int(round(cy)) - half, int(round(cx)) - half  # the window's corner in the image
    show_image(ax, pad[:, oy + half : oy + 3 * half, ox + half : ox + 3 * half])
    ax.add_patch(Rectangle((bx0 - ox - 0.5, by0 - oy - 0.5), bx1 - bx0, by1 - by0, fill=False, ec="red", lw=1.0))


def show_exemplars(axes: Sequence[Any], images: np.ndarray, exemplars: Sequence[dict[str, Any]]) -> None:
    """One exemplar per axis, in order; an axis without one is left blank."""
    for ax, ex in zip(axes, [*exemplars, *[None] * len(axes)], strict=False):
        ax.set_xticks([])
        ax.set_yticks([])
        if ex is None:
            ax.axis("off")
        else:
            _show_exemplar(ax, images, ex)


@literal_text
def plot_class_prototypes(images: np.ndarray, doc: dict[str, Any], path: Path, per_class: int = 4) -> Path | None:
    """For each class that has any, its strongest shared and specialised prototypes: one
    exemplar patch each, labelled with the role, evidence toward the class and coverage.
    Returns None when no class has one (the report then says so in words)."""
    protos = {p["id"]: p for p in doc["prototypes"]}
    rows = [c for c in doc["class_structure"] if c["shared"] or c["specialised"]]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.7 * per_class + 1.2, 1.35 * len(rows)), squeeze=False)
    for r, cls in enumerate(rows):
        items = [("shared", s) for s in sorted(cls["shared"], key=lambda s: -(s["evidence"] or 0))]
        items += [("specialised", s) for s in sorted(cls["specialised"], key=lambda s: -(s["evidence"] or 0))]
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(items):
                ax.axis("off")
            else:
                role, item = items[c]
                proto = protos[item["prototype"]]
                if proto["exemplars"]:
                    _show_exemplar(ax, images, proto["exemplars"][0])
                check = "verified" if item.get("verified") else "NOT verified"
                ax.set_title(f"P{item['prototype']} {role}, {check}\nev {item['evidence']:+.3f}, cov {100 * (item['coverage'] or 0):.0f}%", fontsize=6.5)
            if c == 0:
                ax.set_ylabel(cls["name"], fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("Each class's shared and specialised prototypes (ev: evidence toward the class; cov: share of its samples containing it)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


@literal_text
def plot_saliency_over_training(images: np.ndarray, maps: np.ndarray, samples: Sequence[int], labels: np.ndarray,
                                classes: Sequence[str], steps: Sequence[int], path: Path, max_cols: int = 9) -> Path:
    """Fixed samples (rows) across checkpoints (columns), Grad-CAM upsampled for the picture.

    Args:
        maps: ``(T, N, h, w)`` grid maps.
    """
    import torch

    t = maps.shape[0]
    cols = np.unique(np.linspace(0, t - 1, min(t, max_cols)).round().astype(int))
    size = images.shape[-2:]
    fig, axes = plt.subplots(len(samples), len(cols) + 1, figsize=(1.25 * (len(cols) + 1), 1.3 * len(samples)), squeeze=False)
    for r, i in enumerate(samples):
        show_image(axes[r, 0], images[i])
        axes[r, 0].set_ylabel(classes[labels[i]], fontsize=7, rotation=0, ha="right", va="center")
        if r == 0:
            axes[r, 0].set_title("image", fontsize=7)
        grid = torch.from_numpy(maps[cols, i].astype(np.float32))
        up = torch.nn.functional.interpolate(grid[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()
        for c, col in enumerate(cols):
            ax = axes[r, c + 1]
            show_image(ax, images[i])
            ax.imshow(up[c], cmap="jet", alpha=0.5, vmin=0, vmax=max(float(up[c].max()), 1e-6))
            if r == 0:
                ax.set_title(f"ckpt {col}\nstep {steps[col]}", fontsize=6.5)
    fig.suptitle("Where the model looks, checkpoint by checkpoint (Grad-CAM toward the true class)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@literal_text
def plot_beta_heatmaps(interval_beta: np.ndarray, prototype_ids: Sequence[int], classes: Sequence[str], steps: Sequence[int],
                       path: Path, max_panels: int = 8) -> Path:
    """beta (prototype x class) per interval on one shared, symmetric colour scale.

    Args:
        interval_beta: ``(T-1, K, M)``; only ``prototype_ids`` rows are drawn.
    """
    t = interval_beta.shape[0]
    # every interval in one row up to five, else whole rows of four (a lone panel on a last row
    # read as a separate figure)
    count = t if t <= 5 else min(t, max_panels) // 4 * 4
    panels = np.unique(np.linspace(0, t - 1, count).round().astype(int))
    sub = interval_beta[:, list(prototype_ids)]
    vmax = float(np.abs(sub).max()) or 1.0
    cols = len(panels) if len(panels) <= 5 else 4
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1, 0.16 * len(prototype_ids) * rows + 1.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    im = None
    for a, i in zip(axes.flat, panels, strict=False):
        a.axis("on")
        im = a.imshow(sub[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        a.set_title(f"steps {steps[i]}->{steps[i + 1]}", fontsize=7)
        a.set_xticks(range(len(classes)))
        a.set_xticklabels(classes, rotation=90, fontsize=6)
        a.set_yticks(range(len(prototype_ids)))
        a.set_yticklabels([f"P{k}" for k in prototype_ids], fontsize=5.5)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="beta: confidence change per unit saliency change")
    fig.suptitle("How each prototype's saliency moved each class's confidence, interval by interval (red: toward the class)", fontsize=8)
    return save_figure(fig, path)


def progression_pairs(progression: Sequence[dict[str, Any]], named: Sequence[Sequence[str]], top: int) -> list[dict[str, Any]]:
    """The pairs to draw: every pair in ``named`` (what the text claims), then the pairs with
    the most confusions after checkpoint 0, up to ``top`` in all."""
    wanted = [list(pair) for pair in named]
    chosen = [p for p in progression if list(p["pair"]) in wanted]
    rest = sorted((p for p in progression if p not in chosen), key=lambda p: -max(p["confusions"][1:] or p["confusions"]))
    return chosen + rest[: max(0, top - len(chosen))]


@literal_text
def plot_progression(progression: Sequence[dict[str, Any]], steps: Sequence[int], path: Path, top: int = 8,
                     named: Sequence[Sequence[str]] = ()) -> Path:
    """Confusion count per checkpoint: the pairs the text names, then the most confused
    after the first checkpoint (an untrained model's confusions say nothing about learning),
    up to ``top``; each separation checkpoint is marked."""
    chosen = progression_pairs(progression, named, top)
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    x = np.arange(len(steps))
    for p in chosen:
        (line,) = ax.plot(x, p["confusions"], "o-", ms=3, label=f"{p['pair'][0]} / {p['pair'][1]}")
        if p["separated_at"] is not None:
            s = p["separated_at"]
            ax.plot([s], [p["confusions"][s]], "*", ms=12, color=line.get_color())
    ax.set_xticks(x)
    ax.set_xticklabels([f"{i}\n{s}" for i, s in enumerate(steps)], fontsize=6)
    ax.set_xlabel("checkpoint (and step); star: separated from here on")
    ax.set_ylabel("confusions on the analysis set")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the axes: never on a line
    ax.set_title(f"Confusions over training: the {len(named)} pair(s) the text names, then the most confused after checkpoint 0",
                 fontsize=9)
    return save_figure(fig, path)


@literal_text
def plot_uncertain(images: np.ndarray, doc: dict[str, Any], steps: Sequence[int], path: Path, top: int = 6) -> Path | None:
    """Each uncertain prototype's oscillation d_t = beta[k,a] - beta[k,b] with its patches."""
    rows = doc["uncertain"][:top]
    if not rows:
        return None
    protos = {p["id"]: p for p in doc["prototypes"]}
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 1.7 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [4, 1, 1, 1]})
    for r, u in enumerate(rows):
        ax = axes[r, 0]
        d = [v if v is not None else np.nan for v in u["d"]]
        ax.axhline(0, color="grey", lw=0.8)
        ax.plot(range(len(d)), d, "o-", color="tab:red")
        ax.set_title(f"P{u['prototype']}: toward {u['pair'][0]} (+) or {u['pair'][1]} (-); u={u['score']:.2f}", fontsize=8)
        ax.set_xticks(range(len(d)))
        ax.set_xticklabels([f"{steps[i]}->{steps[i + 1]}" for i in range(len(d))], fontsize=5.5, rotation=45)
        show_exemplars(axes[r, 1:4], images, protos[u["prototype"]]["exemplars"])
    fig.suptitle("Uncertain prototypes: the sign flips show the pull switching between the two classes", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
