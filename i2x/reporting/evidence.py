"""The figures that back a claim: the causal check, where each named prototype sits, and the
findings on whole images with where the prototype is marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2x.explanation.prototypes import cells_box
from i2x.reporting.figures import literal_text, plt, save_figure, show_exemplars, show_image


def _by_role(rows: Sequence[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """At most ``top`` rows, taken in turn from each role (shared, specialised, uncertain) so
    that no role the text cites is cut off, drawn grouped by role in their original order."""
    roles: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        roles.setdefault(r["role"], []).append(r)
    kept: list[dict[str, Any]] = []
    while len(kept) < min(top, len(rows)):
        for group in roles.values():
            if group and len(kept) < top:
                kept.append(group.pop(0))
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(kept, key=lambda r: ([*roles].index(r["role"]), order[id(r)]))


@literal_text
def plot_faithfulness(rows: Sequence[dict[str, Any]], path: Path, top: int = 24) -> Path | None:
    """The causal check: for each named prototype, the drop when its cells are occluded
    beside the same number of uniform, foreground-matched and top Grad-CAM cells, with the
    bootstrap CI of its excess over the foreground-matched baseline. Verified in green."""
    rows = _by_role([r for r in rows if r["verified"] is not None], top)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    marks = {"uniform": ("x", "tab:grey"), "foreground": ("s", "tab:blue"), "gradcam": ("^", "tab:orange")}
    for name, (marker, color) in marks.items():
        ax.scatter([r["baselines"][name] for r in rows], y, marker=marker, color=color, s=22, label=f"{name} cells", zorder=2)
    for yi, r in zip(y, rows, strict=True):
        fg = r["baselines"]["foreground"]
        ax.plot([fg + r["ci"][0], fg + r["ci"][1]], [yi, yi], color="tab:green" if r["verified"] else "tab:red", lw=3, alpha=0.35)
    ax.scatter([r["effect"] for r in rows], y, marker="o", s=40, c=["tab:green" if r["verified"] else "tab:red" for r in rows],
               label="the prototype's cells", zorder=3)
    ax.set_yticks(y)
    ax.set_yticklabels([f"P{r['prototype']} {r['role']} {'/'.join(r['classes'])}" + (" (verified)" if r["verified"] else " (not verified)")
                        for r in rows], fontsize=7)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("drop of the class margin, logits (|pair margin change| for uncertain) when the cells are occluded")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Causal check: occluding a prototype vs the same number of other cells (band: 95% CI of the excess over foreground-matched)",
                 fontsize=8)
    return save_figure(fig, path)


@literal_text
def plot_locations(images: np.ndarray, assignment: np.ndarray, labels: np.ndarray, doc: dict[str, Any], ids: Sequence[int],
                   path: Path) -> Path | None:
    """Where each prototype sits: the share of its class's images that have it at each grid
    cell, beside two exemplar crops.

    Args:
        assignment: ``(N, h, w)``; labels: ``(N,)``; ids: prototypes to draw.
    """
    if not ids:
        return None
    protos = {p["id"]: p for p in doc["prototypes"]}
    classes = doc["classes"]
    fig, axes = plt.subplots(len(ids), 3, figsize=(5.4, 1.75 * len(ids)), squeeze=False)
    for r, k in enumerate(ids):
        p = protos[k]
        c = classes.index(p["where"]["class"])
        members = assignment[labels == c]
        freq = (members == k).mean(0)
        ax = axes[r, 0]
        im = ax.imshow(freq, cmap="magma", vmin=0, vmax=max(float(freq.max()), 1e-6))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"P{k} in {p['where']['class']}: {p['where']['region']} {100 * (p['where']['share'] or 0):.0f}%", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        show_exemplars(axes[r, 1:3], images, p["exemplars"])
    fig.suptitle("Where each named prototype sits (share of the class's images with it at each cell) and exemplars", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (1.75 * len(ids))))  # the title above the first row, not on it
    return save_figure(fig, path)


@literal_text
def plot_findings(images: np.ndarray, assignment: np.ndarray, doc: dict[str, Any], findings: Sequence[dict[str, Any]], path: Path,
                  per_row: int = 4, top: int = 6,
                  title: str = "Verified findings: images containing each prototype (red: where it is)") -> Path | None:
    """Each verified finding (two side by side): whole images that contain the prototype,
    with every grid cell assigned to it shaded and their box outlined in red (where the
    evidence is: a planted mark lies inside it), titled with the claim and the causal
    evidence behind it.

    Args:
        assignment: ``(N, h, w)`` prototype ids of the analysed images.
    """
    from matplotlib.patches import Rectangle

    protos = {p["id"]: p for p in doc["prototypes"]}
    deletion = {(r["prototype"], tuple(r["classes"])): r for r in (doc.get("faithfulness") or {}).get("deletion", [])}
    rows = [f for f in findings if protos[f["prototype"]]["exemplars"]][:top]
    if not rows:
        return None
    side = 2 if len(rows) > 1 else 1
    lines = (len(rows) + side - 1) // side
    height = 1.6 * lines + 0.6
    fig, axes = plt.subplots(lines, side * per_row, figsize=(1.25 * per_row * side + 0.2 * (side - 1), height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.75 / height, wspace=0.06, hspace=0.5)
    for ax in axes.flat:
        ax.axis("off")
    for i, finding in enumerate(rows):
        r, c0 = divmod(i, side)
        target = finding["class"] if "class" in finding else "/".join(finding["pair"])
        check = deletion.get((finding["prototype"], (finding["class"],) if "class" in finding else tuple(finding["pair"])))
        evidence = (f"occluded: margin drop {check['effect']:+.2f} logits vs {check['baselines']['foreground']:+.2f} for matched cells"
                    if check else "verified")
        for j, ex in enumerate(protos[finding["prototype"]]["exemplars"][:per_row]):
            ax = axes[r, c0 * per_row + j]
            ax.axis("on")
            show_image(ax, images[ex["sample"]])
            k, a = finding["prototype"], assignment[ex["sample"]]
            y0, x0, y1, x1 = cells_box(a, k, images.shape[-2:]) or ex["box"]
            size = images.shape[-2:]
            for r_, c_ in zip(*np.nonzero(a == k), strict=True):
                ch, cw = size[0] / a.shape[0], size[1] / a.shape[1]
                ax.add_patch(Rectangle((c_ * cw - 0.5, r_ * ch - 0.5), cw, ch, fill=True, fc="red", alpha=0.18, lw=0))
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.5))
        axes[r, c0 * per_row].set_title(f"P{finding['prototype']} -> {target} ({finding['role']})\n{evidence}", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8, y=1 - 0.12 / height)
    return save_figure(fig, path)


@literal_text
def plot_copies(images: np.ndarray, rows: Sequence[dict[str, Any]], path: Path, top: int = 4) -> Path | None:
    """Each verified rigid copy (strongest first, up to ``top``): a few of its class's images
    that hold it, the copy's footprint boxed in red, and the paste test in the row's title."""
    rows = list(rows)[:top]
    if not rows:
        return None
    cols = max(len(r["exemplars"]) for r in rows) or 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols + 0.4, 1.9 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows, strict=True):
        y0, x0, y1, x1 = r["box"]
        for ax, i in zip(ax_row, [*r["exemplars"], *[None] * cols], strict=False):
            if i is None:
                ax.axis("off")
                continue
            show_image(ax, images[i])
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", lw=1.5))
        ax_row[0].set_title(f"class {r['class']}: the same {r['pixels']} px in {100 * r['share']:.0f}% of its images "
                            f"({100 * r['others']:.1f}% of others); pasted: {100 * r['flips']:.0f}% -> {r['class']} "
                            f"(control {100 * r['control_flips']:.0f}%)", fontsize=7, loc="left")
    fig.suptitle("Rigid copies the final model uses (red: the copied pixels)", fontsize=9)
    return save_figure(fig, path)
