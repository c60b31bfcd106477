"""The report: figures plus ``index.html`` with plain-language findings, made from the
explanation (and, for tune runs, the tuning summary).

``index.html`` is one self-contained file: every figure is embedded as a data URI, so
it reads the same in the MLflow UI's artifact viewer, from a downloaded folder, and
offline. The PNGs are written beside it too.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from i2x import viz

GALLERY_PAGE = 16
GALLERY_PAGES = 4  # at most 64 prototypes drawn; all are listed in prototypes.json


def _names(ids: list[int]) -> str:
    parts = [f"P{k}" for k in ids]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def statements(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Plain-language findings, generated from the explanation, by report section."""
    out: dict[str, list[str]] = {"classes": [], "progression": [], "uncertain": [], "faithfulness": []}
    for cls in doc["class_structure"]:
        shared = sorted(cls["shared"], key=lambda s: -(s["evidence"] or 0))[:3]
        if shared:
            cov = min(s["coverage"] for s in shared)
            out["classes"].append(f"Class {cls['name']} relies on prototype{'s' if len(shared) > 1 else ''} "
                                  f"{_names([s['prototype'] for s in shared])} (shared by at least {100 * cov:.0f}% of its samples).")
        else:
            out["classes"].append(f"Class {cls['name']} has no shared prototype: no single part is both common to its samples and pushing toward it.")
        for s in sorted(cls["specialised"], key=lambda s: -(s["evidence"] or 0))[:2]:
            out["classes"].append(f"Some {cls['name']} samples use P{s['prototype']} instead: it is in {100 * s['group_coverage']:.0f}% of one "
                                  f"learning group but only {100 * s['coverage']:.0f}% of the class (a variant within the class).")
    steps = [c["step"] for c in doc["checkpoints"]]
    separated = [p for p in doc["progression"] if p["separated_at"] is not None and max(p["confusions"]) > 0]
    never = [p for p in doc["progression"] if p["separated_at"] is None]
    if separated:
        last = max(separated, key=lambda p: (p["separated_at"], max(p["confusions"])))
        first = min(separated, key=lambda p: (p["separated_at"], -max(p["confusions"])))
        out["progression"].append(f"{last['pair'][0]} and {last['pair'][1]} were the last pair separated, at checkpoint "
                                  f"{last['separated_at']} (step {steps[last['separated_at']]}), after up to {max(last['confusions'])} confusions.")
        if first is not last:
            out["progression"].append(f"{first['pair'][0]} and {first['pair'][1]} were separated first, at checkpoint {first['separated_at']}.")
        drivers = [d["prototype"] for d in last["toward_a"]][:2]
        if drivers:
            out["progression"].append(f"When {last['pair'][0]} and {last['pair'][1]} separated, {_names(drivers)} pushed toward "
                                      f"{last['pair'][0]} rather than {last['pair'][1]}.")
    for p in sorted(never, key=lambda p: -p["confusions"][-1])[:3]:
        out["progression"].append(f"{p['pair'][0]} and {p['pair'][1]} are never fully separated: still {p['confusions'][-1]} "
                                  f"confusions at the last checkpoint.")
    rho = doc.get("distinct_vs_separation_spearman")
    if rho is not None:
        out["progression"].append(f"Pairs whose classes have more distinct prototypes {'were' if rho < 0 else 'were not'} separated "
                                  f"earlier (Spearman {rho:+.2f}; the paper expects a negative value).")
    shown = 10
    for u in doc["uncertain"][:shown]:
        out["uncertain"].append(f"P{u['prototype']} oscillates between {u['pair'][0]} and {u['pair'][1]} "
                                f"(uncertainty {u['score']:.2f}: its pull changed sign {100 * u['oscillation']:.0f}% of the time, weighted).")
    if len(doc["uncertain"]) > shown:
        out["uncertain"].append(f"... and {len(doc['uncertain']) - shown} more uncertain prototypes, listed with their scores in "
                                "explanation/explanation.json.")
    if not doc["uncertain"]:
        out["uncertain"].append("No prototype oscillates enough to count as uncertain at this threshold.")
    m = doc["metrics"]
    r2 = m["mean_r2_heldout"]
    out["faithfulness"].append(
        f"On held-out samples the prototype changes explain {'a share' if r2 is not None and r2 > 0 else 'none'} of the confidence "
        f"changes (size-weighted R^2 {r2 if r2 is not None else 'n/a'}); {100 * m['noise_share']:.0f}% of samples fit no learning group.")
    return out


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _section(title: str, lines: list[str], figures: list[str]) -> str:
    items = "".join(f"<li>{html.escape(s)}</li>" for s in lines)
    return f"<section><h2>{html.escape(title)}</h2><ul>{items}</ul>{''.join(figures)}</section>"


_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
li{margin:.25em 0}figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;font-size:.9em}
.meta{color:#555;font-size:.9em}"""


def _page(title: str, meta: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(meta)}</p>{body}</body></html>\n")


def explain_report(doc: dict[str, Any], arrays: dict[str, np.ndarray], out: Path, seed: int = 0) -> Path:
    """Figures and ``index.html`` for an explain run.

    Args:
        doc: the explanation JSON.
        arrays: ``saliency/maps.npz`` contents (maps, labels, images, interval_beta, steps).
        out: folder to write into.
    """
    out.mkdir(parents=True, exist_ok=True)
    images, labels, maps = arrays["images"], arrays["labels"].astype(int), arrays["maps"]
    classes = doc["classes"]
    steps = [c["step"] for c in doc["checkpoints"]]
    order = sorted(doc["prototypes"], key=lambda p: (not p["uncertain"], not p["shared_by"], not p["specialised_for"], -p["n_samples"], p["id"]))
    shown = order[: GALLERY_PAGE * GALLERY_PAGES]
    galleries = []
    for i in range(0, len(shown), GALLERY_PAGE):
        page = i // GALLERY_PAGE + 1
        pages = (len(shown) + GALLERY_PAGE - 1) // GALLERY_PAGE
        galleries.append(viz.plot_gallery(images, shown[i : i + GALLERY_PAGE], classes, f"Prototypes, page {page}/{pages}", out / f"gallery-{page}.png"))
    rng = np.random.default_rng(seed)
    samples = [int(rng.choice(np.flatnonzero(labels == c))) for c in range(len(classes)) if (labels == c).any()][:10]
    figs = {
        "classes": viz.plot_class_prototypes(images, doc, out / "class_prototypes.png"),
        "saliency": viz.plot_saliency_over_training(images, maps, samples, labels, classes, steps, out / "saliency_over_training.png"),
        "progression": viz.plot_progression(doc["progression"], steps, out / "progression.png"),
        "uncertain": viz.plot_uncertain(images, doc, steps, out / "uncertain.png"),
    }
    mass = np.abs(arrays["interval_beta"]).sum(axis=(0, 2))
    top = sorted(int(k) for k in np.argsort(-mass, kind="stable")[:24])
    figs["beta"] = viz.plot_beta_heatmaps(arrays["interval_beta"], top, classes, steps, out / "beta_heatmap.png")
    said = statements(doc)
    run = doc["run"]
    body = "".join([
        _section("What each class relies on", said["classes"], [_img(figs["classes"], "Shared and specialised prototypes per class")]
                 + [_img(g, f"Prototype gallery page {i + 1}: exemplar patches and coverage per class") for i, g in enumerate(galleries)]),
        _section("Where the model looks over training", [f"{len(steps)} checkpoints from step {steps[0]} to step {steps[-1]}."],
                 [_img(figs["saliency"], "Fixed samples across checkpoints")]),
        _section("The order in which classes are separated", said["progression"], [_img(figs["progression"], "Confusions per checkpoint")]),
        _section("Uncertain prototypes", said["uncertain"], [_img(figs["uncertain"], "Oscillation of each uncertain prototype")]),
        _section("How prototypes move confidence", said["faithfulness"],
                 [_img(figs["beta"], f"beta per interval for the {len(top)} prototypes with the largest total |beta|")]),
    ])
    meta = (f"dataset {run['dataset']}, model {run['model']}, layer {run['target_layer']}, {run['method']}; "
            f"{doc['metrics']['n_samples']} samples, {doc['metrics']['n_prototypes']} prototypes; training run {run.get('train_run_id')}")
    index = out / "index.html"
    index.write_text(_page("I2X explanation: why does the model look there?", meta, body))
    return index


def tune_report(summary: dict[str, Any], out: Path) -> Path:
    """Figures and ``index.html`` for a tune run."""
    from i2x.tuning import STRATEGIES

    out.mkdir(parents=True, exist_ok=True)
    fig = viz.plot_strategies(summary, list(STRATEGIES), out / "strategies.png")
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{100 * r['accuracy_mean']:.2f} &plusmn; {100 * r['accuracy_std']:.2f}</td>"
        f"<td>{r['focal_mean']:.1f} &plusmn; {r['focal_std']:.1f}</td><td>{100 * r['paired_accuracy_diff_mean']:+.2f}</td><td>{len(r['seeds'])}</td></tr>"
        for n in STRATEGIES if (r := summary["strategies"].get(n)))
    table = (f"<table><tr><th>strategy</th><th>test accuracy (%)</th><th>{html.escape(summary['focal_pair'])} confusions</th>"
             f"<th>paired diff vs full-&gt;full (points)</th><th>seeds</th></tr>{rows}</table>")
    tuned = summary["strategies"]["tuned"]["plan"]
    lines = [summary["verdict"]["text"],
             f"The tuned recipe: {tuned['kind']} at strength {tuned['alpha']:.2f} on prototypes "
             f"{', '.join(f'P{k}' for k in tuned['targets']) or '(none)'}, {tuned['epochs_perturbed']} perturbed + "
             f"{tuned['epochs_full']} full epochs at learning rate {tuned['lr']:.2g}."]
    body = _section("Did I2X-guided fine-tuning help?", lines, [table, _img(fig, "Test accuracy and focal-pair confusions per strategy")])
    index = out / "index.html"
    index.write_text(_page("I2X-guided fine-tuning", f"study {summary.get('study', {}).get('name', '')}", body))
    return index
