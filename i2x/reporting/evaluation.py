"""The test-set evaluation of a model as files (written by every train run under
``evaluation/``) and as the explain report's first detail section: the confusion matrix,
accuracy per class, the most-confused pairs with their images, and the groups where the
data has them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from i2x.reporting.run_figures import plot_confused, plot_evaluation
from i2x.training.evaluation import evaluate_predictions, evaluation_metrics
from i2x.training.groups import Groups, describe, group_metrics, group_table

FILES = ("confusion.json", "confusion.png", "most_confused.png", "groups.json")


def write_evaluation(out: Path, pred: np.ndarray, y: np.ndarray, images: np.ndarray, classes: tuple[str, ...],
                     groups: Groups | None) -> tuple[dict[str, float], str | None]:
    """Write :data:`FILES` (those that apply) into ``out``; returns the MLflow metrics and,
    with groups, the one-line group summary."""
    out.mkdir(parents=True, exist_ok=True)
    ev = evaluate_predictions(pred, y, len(classes))
    metrics = evaluation_metrics(ev, classes)
    (out / "confusion.json").write_text(json.dumps({
        "classes": list(classes), "confusion": ev.confusion.tolist(), "accuracy": float((pred == y).mean()),
        "per_class_accuracy": [None if a != a else float(a) for a in ev.per_class],
        "most_confused": [{"true": classes[a], "predicted": classes[b], "count": n, "test_index": e}
                          for (a, b, n), e in zip(ev.confused, ev.examples, strict=True)]}, indent=1))
    plot_evaluation(ev.confusion, ev.per_class, classes, out / "confusion.png")
    plot_confused(images, ev.confused, ev.examples, classes, out / "most_confused.png")
    line = None
    if groups is not None:
        rows = group_table(pred, y, groups)
        found = group_metrics(rows)
        metrics |= found
        (out / "groups.json").write_text(json.dumps({"source": groups.source, "groups": rows}, indent=1))
        line = describe(rows, found)
    return metrics, line


def evaluation_lines(folder: Path) -> list[str]:
    """What the report says about a downloaded ``evaluation/`` folder (empty if it has none)."""
    path = folder / "confusion.json"
    if not path.is_file():
        return []
    ev: dict[str, Any] = json.loads(path.read_text())
    confusion = np.array(ev["confusion"])
    total = int(confusion.sum())
    accuracy = ev.get("accuracy", float(np.trace(confusion)) / max(total, 1))
    per = [(a, c) for a, c in zip(ev["per_class_accuracy"], ev["classes"], strict=True) if a is not None]
    lines = [f"The final model classifies {100 * accuracy:.1f}% of the {total} test images correctly."]
    if per:
        low, name = min(per)
        lines.append(f"Its weakest class is {name} ({100 * low:.1f}% correct).")
    pairs = ev.get("most_confused") or []
    if pairs:
        lines.append("Most confused: " + "; ".join(f"{p['true']} taken for {p['predicted']} ({p['count']} images)" for p in pairs[:3])
                     + " (figure: most_confused.png).")
    groups = folder / "groups.json"
    if groups.is_file():
        rows = json.loads(groups.read_text())["groups"]
        lines.append(describe(rows, group_metrics(rows)).capitalize() + ".")
    return lines
