"""The report: figures plus ``index.html`` with plain-language findings, made from the
explanation (and, for tune runs, the tuning summary).

``index.html`` is one self-contained file: every figure is embedded as a data URI, so
it reads the same in the MLflow UI's artifact viewer, from a downloaded folder, and
offline. The PNGs are written beside it too.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2x.reporting import figures, run_figures

GALLERY_PAGES = 4  # at most 4 pages of figures.GALLERY_PAGE drawn; all prototypes are listed in prototypes.json


def _names(ids: list[int]) -> str:
    parts = [f"P{k}" for k in ids]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _share(value: float, several: bool) -> str:
    """``all``, or ``at least 85%`` for the smallest of several, ``85%`` for one."""
    if round(100 * value) >= 100:
        return "all"
    return f"at least {100 * value:.0f}%" if several else f"{100 * value:.0f}%"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _explain_cfg(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("config", {}).get("explain", {})


def named_prototypes(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every candidate label, sorted by what it earned.

    - ``findings``: beats the permutation null (or the null is off) and passes the causal check;
    - ``model_only``: passes the causal check, but its training history does not beat the null;
    - ``not_verified``: fails the causal check, or too few images to test it.

    Shared/specialised rows carry ``class``; uncertain rows their ``pair``.
    """
    out: dict[str, list[dict[str, Any]]] = {"findings": [], "model_only": [], "not_verified": []}

    def put(row: dict[str, Any]) -> None:
        if not row.get("verified"):
            out["not_verified"].append(row)
        elif row.get("beats_null") is False:
            out["model_only"].append(row)
        else:
            out["findings"].append(row)

    for cls in doc["class_structure"]:
        for role in ("shared", "specialised"):
            for row in cls[role]:
                put({**row, "role": role, "class": cls["name"]})
    for u in doc["uncertain"]:
        put({**u, "role": "uncertain"})
    return out


def headline(doc: dict[str, Any], limit: int = 4) -> str:
    """One line: the verified findings (prototype -> class or pair), or that there are none."""
    named = named_prototypes(doc)
    if doc.get("faithfulness") is None:
        return "causal check off: no prototype is stated as a finding"
    found = named["findings"]
    if not found:
        return f"no finding: none of {_plural(len(named['not_verified']) + len(named['model_only']), 'named prototype')} passed both the causal check and the permutation null"
    seen = dict.fromkeys(f"P{r['prototype']} -> {r['class'] if 'class' in r else '/'.join(r['pair'])}" for r in found)
    shown = list(seen)[:limit]
    more = f" and {len(seen) - limit} more" if len(seen) > limit else ""
    return f"{_plural(len(seen), 'verified finding')}: {', '.join(shown)}{more}"


def fit_line(metrics: dict[str, Any]) -> str:
    """The causal count and the regression's held-out R^2 beside its class-only baseline."""
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    checked = (f"{metrics['n_verified']} of {_plural(metrics['n_named'], 'named prototype')} passed the causal check"
               if metrics.get("n_named") is not None else "causal check off")
    return (f"{checked}; held-out R^2 {num(metrics.get('mean_r2_heldout'))} against {num(metrics.get('r2_class'))} from the class "
            f"alone (the gap is what prototypes add; near 0 or negative: they explain little)")


def progression_claims(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """The pairs the report names: the last separated, the first separated (None when
    no pair qualifies, or the same pair), and up to three never separated. Only pairs with
    at least ``explain.min_peak_confusions`` confusions at some checkpoint qualify."""
    min_peak = int(doc["config"].get("explain", {}).get("min_peak_confusions", 10))
    separated = [p for p in doc["progression"] if p["separated_at"] is not None and max(p["confusions"]) >= min_peak]
    never = [p for p in doc["progression"] if p["separated_at"] is None and max(p["confusions"]) >= min_peak]
    never = sorted(never, key=lambda p: -p["confusions"][-1])[:3]
    if not separated:
        return None, None, never
    last = max(separated, key=lambda p: (p["separated_at"], max(p["confusions"])))
    first = min(separated, key=lambda p: (p["separated_at"], -max(p["confusions"])))
    return last, (first if first is not last else None), never


def statements(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Plain-language findings, generated from the explanation, by report section. Only
    prototypes that passed the causal check are stated as findings; each sentence names
    the figure that backs it."""
    out: dict[str, list[str]] = {"classes": [], "locations": [], "progression": [], "uncertain": [], "faithfulness": []}
    cfg = _explain_cfg(doc)
    protos = {p["id"]: p for p in doc["prototypes"]}
    checked = doc.get("faithfulness") is not None
    named = named_prototypes(doc)
    for cls in doc["class_structure"]:
        found = [r for r in named["findings"] if r.get("class") == cls["name"]]
        shared = sorted((r for r in found if r["role"] == "shared"), key=lambda r: -(r["evidence"] or 0))[:3]
        if shared:
            cov = min(r["coverage"] for r in shared)
            out["classes"].append(f"Class {cls['name']} relies on {_names([r['prototype'] for r in shared])}: "
                                  f"{'each is' if len(shared) > 1 else 'it is'} in {_share(cov, len(shared) > 1)} of its samples, its rise in "
                                  f"saliency pushed the class's confidence up beyond a within-class permutation null, and occluding it hurts "
                                  f"the class more than occluding matched random cells (figures: class_prototypes.png, faithfulness.png).")
        for r in sorted((r for r in found if r["role"] == "specialised"), key=lambda r: -(r["evidence"] or 0))[:2]:
            out["classes"].append(f"Some {cls['name']} samples use P{r['prototype']} instead: it is in {100 * r['group_coverage']:.0f}% of one "
                                  f"learning group but only {100 * r['coverage']:.0f}% of the class, a variant within the class "
                                  f"(figures: class_prototypes.png, faithfulness.png).")
        used = sorted({r["prototype"] for r in named["model_only"] if r.get("class") == cls["name"]})
        if used:
            out["classes"].append(f"The final model relies on {_names(used)} for {cls['name']} (occluding "
                                  f"{'it' if len(used) == 1 else 'them'} hurts the class more than matched random cells), but the training "
                                  f"history does not single {'it' if len(used) == 1 else 'them'} out beyond class structure (permutation null) "
                                  f"(figure: faithfulness.png).")
    if not named["findings"] and not named["model_only"]:
        out["classes"].append("No prototype passed the causal check; the explanation names no finding for this model." if checked
                              else "The causal check did not run; no prototype is stated as a finding.")
    failed: dict[int, list[str]] = {}
    for r in named["not_verified"]:
        failed.setdefault(r["prototype"], []).append(r["class"] if "class" in r else "/".join(r["pair"]))
    if failed:
        listed = ", ".join(f"P{k} ({', '.join(dict.fromkeys(cs))})" for k, cs in sorted(failed.items()))
        out["classes"].append(f"Not verified: {listed}: labelled by the training history for those classes, but occluding "
                              f"{'it' if len(failed) == 1 else 'them'} there does not hurt the model more than matched random cells "
                              f"(or too few images contain {'it' if len(failed) == 1 else 'them'}); not findings (figure: faithfulness.png).")
    background = doc.get("background", [])
    if background:
        out["classes"].append(f"Background: {_names(background)} {'is' if len(background) == 1 else 'are'} in most images of most "
                              f"classes (blank canvas, borders) and never counted as class evidence (figure: gallery-1.png).")

    concentration = float(cfg.get("concentration_share", 0.8))
    for k in sorted({r["prototype"] for r in named["findings"] + named["model_only"]}):
        where = protos[k]["where"]
        if where["share"] is not None and where["share"] >= concentration:
            out["locations"].append(f"P{k} sits in the {where['region']} of the image in {100 * where['share']:.0f}% of the "
                                    f"{where['n_images']} {where['class']} images that contain it (figure: locations.png). A prototype "
                                    f"fixed in one place can be a shortcut: check that the model should look there.")

    steps = [c["step"] for c in doc["checkpoints"]]
    min_peak = int(cfg.get("min_peak_confusions", 10))
    last, first, never = progression_claims(doc)
    if last is not None:
        out["progression"].append(f"{last['pair'][0]} and {last['pair'][1]} were the last pair separated, at checkpoint "
                                  f"{last['separated_at']} (step {steps[last['separated_at']]}), after up to "
                                  f"{_plural(max(last['confusions']), 'confusion')} (figure: progression.png).")
        if first is not last:
            out["progression"].append(f"{first['pair'][0]} and {first['pair'][1]} were separated first, at checkpoint "
                                      f"{first['separated_at']} (figure: progression.png).")
    else:
        out["progression"].append(f"No class pair reached {min_peak} confusions at any checkpoint, so no separation order is claimed "
                                  f"(figure: progression.png).")
    for p in never:
        out["progression"].append(f"{p['pair'][0]} and {p['pair'][1]} are never fully separated: still "
                                  f"{_plural(p['confusions'][-1], 'confusion')} at the last checkpoint (figure: progression.png).")
    rho = doc.get("distinct_vs_separation_spearman")
    if rho is not None:
        out["progression"].append(f"Pairs whose classes have more distinct prototypes {'were' if rho < 0 else 'were not'} separated "
                                  f"earlier (Spearman {rho:+.2f} over all pairs; the paper expects a negative value; no test).")

    shown = 10
    found_u = [u for u in named["findings"] if u["role"] == "uncertain"]
    for u in found_u[:shown]:
        out["uncertain"].append(f"P{u['prototype']} oscillates between {u['pair'][0]} and {u['pair'][1]} (uncertainty {u['score']:.2f}, beyond "
                                f"the permutation null), and occluding it moves the {u['pair'][0]}/{u['pair'][1]} margin more than matched "
                                f"random cells (figures: uncertain.png, faithfulness.png).")
    if len(found_u) > shown:
        out["uncertain"].append(f"... and {len(found_u) - shown} more, listed in explanation/explanation.json.")
    other_u = [u["prototype"] for u in doc["uncertain"] if u["prototype"] not in {f["prototype"] for f in found_u}]
    if other_u:
        out["uncertain"].append(f"{_names(other_u)} scored as oscillating but failed the permutation null or the causal check: not findings "
                                f"(figure: faithfulness.png).")
    if not doc["uncertain"]:
        out["uncertain"].append("No prototype oscillates enough to count as uncertain (figure: uncertain.png).")
    null = doc.get("null")
    if null:
        c = null["counts"]
        out["uncertain"].append("Against a within-class permutation null (" + _plural(null["n_permutations"], "replicate") + "): "
                                + "; ".join(f"{role} candidate labels {c[role]['real']:.0f} vs {c[role]['null_mean']:.1f} +- "
                                            f"{c[role]['null_std']:.1f} in the null" for role in ("shared", "specialised", "uncertain"))
                                + ". Only labels that beat the null individually are kept.")

    reg = doc.get("regression") or {}
    r2 = (reg.get("heldout_r2") or {}).get("groups", {})
    if r2.get("prototypes") is not None:
        verdict = ("predict confidence changes better than class identity alone" if reg.get("prototypes_beat_class")
                   else "do NOT predict confidence changes better than class identity alone")
        adds = "and add to it" if reg.get("prototypes_add_to_class") else "and add nothing to it"
        out["faithfulness"].append(
            f"Prototype changes {verdict} {adds}: held-out R^2 {r2['prototypes']:.2f} vs class one-hot "
            f"{r2['class']:.2f}, both {r2['prototypes+class']:.2f}, group mean alone {r2['group_mean']:.2f} "
            f"({reg.get('folds')}-fold, {reg.get('mode')} fit, learning groups only; figure: beta_heatmap.png).")
    noise = (reg.get("heldout_r2") or {}).get("noise", {})
    if noise.get("prototypes") is not None:
        out["faithfulness"].append(f"HDBSCAN noise ({100 * doc['metrics']['noise_share']:.0f}% of samples) is scored apart: R^2 "
                                   f"{noise['prototypes']:.2f} vs class one-hot {noise['class']:.2f}.")
    faith = doc.get("faithfulness")
    if faith:
        sm = faith["summary"]
        if sm["n_tested"]:
            out["faithfulness"].append(f"{sm['n_verified']} of {sm['n_tested']} named prototypes passed the causal check (mean excess "
                                       f"drop over matched random cells {sm['mean_excess']:+.2f}; figure: faithfulness.png).")
        road = faith["road"]
        if road:
            better = road["gradcam_ci"][0] > road["random_ci"][1]
            out["faithfulness"].append(f"ROAD (pytorch-grad-cam, {road['n_images']} images): the final Grad-CAM maps score "
                                       f"{road['gradcam']:.3f} [{road['gradcam_ci'][0]:.3f}, {road['gradcam_ci'][1]:.3f}] against "
                                       f"{road['random']:.3f} for random maps: {'more' if better else 'not clearly more'} faithful than chance.")
    return out


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def _section(title: str, lines: list[str], figures: list[str]) -> str:
    items = "".join(f"<li>{html.escape(s)}</li>" for s in lines)
    return f"<section id=\"{_anchor(title)}\"><h2>{html.escape(title)}</h2><ul>{items}</ul>{''.join(figures)}</section>"


def _folded(title: str, figures: list[str]) -> str:
    """Figures behind a click: the page stays short, nothing is left out."""
    return f"<details><summary>{html.escape(title)}</summary>{''.join(figures)}</details>"


def _contents(titles: list[str]) -> str:
    links = " · ".join(f"<a href=\"#{_anchor(t)}\">{html.escape(t)}</a>" for t in titles)
    return f"<nav class=\"contents\"><b>Details:</b> {links}</nav>"


def _findings_caption(named: dict[str, list[dict[str, Any]]]) -> str:
    """What the summary's picture shows: verified findings, else the prototypes only the final model uses."""
    return ("Verified findings: images containing each prototype (red: its cell)" if named["findings"]
            else "Used by the final model (causal check passed), not singled out by its history")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _summary(doc: dict[str, Any], named: dict[str, list[dict[str, Any]]], findings_figure: Path | None, titles: list[str]) -> str:
    """The first screen: data, model, accuracy, the verified findings with their picture,
    the regression against its baseline, then the index of the details."""
    run, metrics = doc["run"], doc["metrics"]
    last = doc["checkpoints"][-1]
    accuracy = f", validation accuracy {last['val_accuracy']:.4f} at the last checkpoint" if last.get("val_accuracy") is not None else ""
    lines = [
        f"Data {run['dataset']} ({len(doc['classes'])} classes, {metrics['n_samples']} analysed samples); model {run['model']}{accuracy}; "
        f"{run['method']} at {run['target_layer']} over {len(doc['checkpoints'])} checkpoints.",
        _sentence(headline(doc)),
        _sentence(fit_line(metrics)),
        "Whether fine-tuning guided by this explanation helps is in the tune run's report (i2x tune --run-id <this run>).",
    ]
    if not named["findings"] and named["model_only"]:
        lines.insert(2, f"Used by the final model but not singled out by its training history: "
                        f"{_names(sorted({r['prototype'] for r in named['model_only']}))} (pictured below).")
    return _section("Summary", lines, [_img(findings_figure, _findings_caption(named))]) + _contents(titles)


_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
li{margin:.25em 0}figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;font-size:.9em}
.meta{color:#555;font-size:.9em}nav.contents{margin:1em 0;padding:.5em .8em;background:#f6f6f6;font-size:.9em}
#summary img{max-height:60vh}"""


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
    pages = figures.gallery_pages(doc["prototypes"], GALLERY_PAGES)
    galleries = [figures.plot_gallery(images, page, classes, f"Prototypes, page {n}/{len(pages)}", out / f"gallery-{n}.png")
                 for n, page in enumerate(pages, start=1)]
    rng = np.random.default_rng(seed)
    samples = [int(rng.choice(np.flatnonzero(labels == c))) for c in range(len(classes)) if (labels == c).any()][:10]
    named = named_prototypes(doc)
    verified_ids = sorted({r["prototype"] for r in named["findings"] + named["model_only"]})[:12]
    last, first, never = progression_claims(doc)
    figs = {
        "classes": figures.plot_class_prototypes(images, doc, out / "class_prototypes.png"),
        "faithfulness": figures.plot_faithfulness((doc.get("faithfulness") or {}).get("deletion", []), out / "faithfulness.png"),
        "locations": figures.plot_locations(images, arrays["assignment"], labels, doc, verified_ids, out / "locations.png"),
        "saliency": figures.plot_saliency_over_training(images, maps, samples, labels, classes, steps, out / "saliency_over_training.png"),
        "progression": figures.plot_progression(doc["progression"], steps, out / "progression.png",
                                            named=[p["pair"] for p in (last, first, *never) if p]),
        "uncertain": figures.plot_uncertain(images, doc, steps, out / "uncertain.png"),
    }
    mass = np.abs(arrays["interval_beta"]).sum(axis=(0, 2))
    top = sorted(int(k) for k in np.argsort(-mass, kind="stable")[:24])
    figs["beta"] = figures.plot_beta_heatmaps(arrays["interval_beta"], top, classes, steps, out / "beta_heatmap.png")
    said = statements(doc)
    run = doc["run"]
    figs["findings"] = figures.plot_findings(images, doc, named["findings"] or named["model_only"], out / "findings.png",
                                         title=_findings_caption(named))
    sections = [  # (title, sentences, figures): rendered in order and listed in the index
        ("What each class relies on", said["classes"], [_img(figs["classes"], "Shared and specialised prototypes per class (verified or not: see the causal check)")]
                 + [_folded(f"Prototype gallery ({len(galleries)} page{'s' if len(galleries) != 1 else ''}): exemplar patches and coverage per class",
                            [_img(g, f"Prototype gallery page {i + 1}") for i, g in enumerate(galleries)])]),
        ("Where the named prototypes sit", said["locations"] or ["No verified prototype is concentrated in one part of the image."],
                 [_img(figs["locations"], "Location maps of the verified prototypes")]),
        ("Causal check", [s for s in said["faithfulness"] if "causal" in s or "ROAD" in s],
                 [_img(figs["faithfulness"], "Occlusion of each named prototype against matched random cells")]),
        ("Where the model looks over training", [f"{len(steps)} checkpoints from step {steps[0]} to step {steps[-1]}."],
                 [_img(figs["saliency"], "Fixed samples across checkpoints")]),
        ("The order in which classes are separated", said["progression"], [_img(figs["progression"], "Confusions per checkpoint")]),
        ("Uncertain prototypes", said["uncertain"], [_img(figs["uncertain"], "Oscillation of each uncertain prototype")]),
        ("How prototypes move confidence", [s for s in said["faithfulness"] if "causal" not in s and "ROAD" not in s],
                 [_img(figs["beta"], f"beta per interval for the {len(top)} prototypes with the largest total |beta|")]),
    ]
    body = _summary(doc, named, figs["findings"], [title for title, _, _ in sections]) + "".join(_section(*s) for s in sections)
    meta = (f"dataset {run['dataset']}, model {run['model']}, layer {run['target_layer']}, {run['method']}; "
            f"{doc['metrics']['n_samples']} samples, {doc['metrics']['n_prototypes']} prototypes; training run {run.get('train_run_id')}")
    index = out / "index.html"
    index.write_text(_page("I2X explanation: why does the model look there?", meta, body))
    return index


def tune_report(summary: dict[str, Any], out: Path, optuna_figures: Sequence[Path] = ()) -> Path:
    """Figures and ``index.html`` for a tune run: the paper-format table with every row's
    settings, then each strategy's verdict against its matched controls, then Optuna's
    own figures of the study (``optuna_figures``)."""
    from i2x.tuning.comparison import STRATEGIES, summary_table

    out.mkdir(parents=True, exist_ok=True)
    fig = run_figures.plot_strategies(summary, list(STRATEGIES), out / "strategies.png")
    header, body_rows = summary_table(summary)
    table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body_rows) + "</table>")
    lines = summary["verdict"]["text"].splitlines()
    rows = summary["strategies"]
    if "tuned" in rows and "full->full" in rows and rows["tuned"]["plan"] == rows["full->full"]["plan"]:
        lines.insert(0, "The tuned row IS the full->full row: the best trial's plan perturbs nothing, so the study found no "
                        "targeted change worth making, and there is nothing to compare.")
    if summary.get("goal_met") is not None:
        lines.append(f"Goal (tuned cuts {summary['focal_pair']} confusions by at least 10% against its full->full at no loss of accuracy): "
                     f"{'met' if summary['goal_met'] else 'not met'}.")
    unmatched = [m for m in summary.get("matches", []) if not m["matched"]]
    if unmatched:
        lines.append("random-target could not match " + ", ".join(f"P{m['target']}" for m in unmatched)
                     + " within the tolerance on the number of images affected; the closest prototype was used.")
    body = _section("Did I2X-guided fine-tuning help?", lines, [table, _img(fig, "Test accuracy and focal-pair confusions per strategy")])
    captions = {"optimization_history.png": "Optuna: validation accuracy per trial",
                "param_importances.png": "Optuna: parameter importances (few trials: indicative only)",
                "pareto_front.png": "Optuna: validation accuracy against focal-pair validation confusions (Pareto front)"}
    figures = [_img(p, captions.get(p.name, p.name)) for p in optuna_figures]
    if figures:
        body += _section("The study", [f"{summary.get('study', {}).get('n_trials', '?')} trials; validation-set values, not test."], figures)
    index = out / "index.html"
    index.write_text(_page("I2X-guided fine-tuning", f"study {summary.get('study', {}).get('name', '')}", body))
    return index
