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

from i2x.reporting import evidence, figures, run_figures
from i2x.reporting.claims import (
    copy_checks,
    fit_line,
    headline,
    named_prototypes,
    progression_claims,
    prototype_names,
    shortcut_checks,
)
from i2x.reporting.power import power_line
from i2x.reporting.statements import statements

GALLERY_PAGES = 4  # at most 4 pages of figures.GALLERY_PAGE drawn; all prototypes are listed in prototypes.json


def _img(path: Path | None, alt: str, read: str = "") -> str:
    """A figure: ``alt`` names it (for screen readers and tests), the caption says how to read
    it (``read``; the figure's own title already says what it is)."""
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    caption = f"<figcaption>{html.escape(read)}</figcaption>" if read else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">{caption}</figure>'


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


def _findings_caption(named: dict[str, list[dict[str, Any]]], checks: list[dict[str, Any]] | None = None) -> str:
    """What the summary's picture shows: shortcut checks first, then verified findings, else
    the prototypes only the final model uses."""
    lead = "Shortcut checks first, then " if checks else ""
    return (f"{lead}{'v' if lead else 'V'}erified findings: images containing each prototype (red: the cells where it is)" if named["findings"]
            else f"{lead}{'u' if lead else 'U'}sed by the final model (causal check passed), not singled out by its history")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _summary(doc: dict[str, Any], named: dict[str, list[dict[str, Any]]], findings_figure: Path | None, titles: list[str],
             run_id: str | None = None) -> str:
    """The first screen: data, model, accuracy, the verified findings with their picture,
    the regression against its baseline, then the index of the details."""
    run, metrics = doc["run"], doc["metrics"]
    last = doc["checkpoints"][-1]
    accuracy = f", validation accuracy {last['val_accuracy']:.4f} at the last checkpoint" if last.get("val_accuracy") is not None else ""
    lines = [
        f"Data {run['dataset']} ({len(doc['classes'])} classes, {metrics['n_samples']} analysed samples); model {run['model']}{accuracy}; "
        f"{run['method']} at {run['target_layer']} over {len(doc['checkpoints'])} checkpoints.",
        _sentence(headline(doc)),
        _sentence(power_line(doc)),
        _sentence(fit_line(metrics)),
        (f"Whether fine-tuning guided by this explanation helps is in the report of a tune run: i2x tune --run-id {run_id}."
         if run_id else "Whether fine-tuning guided by this explanation helps is in the report of a tune run on this explain run."),
    ]
    if not named["findings"] and named["model_only"]:
        lines.insert(2, f"Used by the final model but not singled out by its training history: "
                        f"{prototype_names(sorted({r['prototype'] for r in named['model_only']}))} (pictured below).")
    return _section("Summary", lines, [_img(findings_figure, _findings_caption(named, shortcut_checks(doc)))]) + _contents(titles)


_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
li{margin:.25em 0}figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;font-size:.9em}
.meta{color:#555;font-size:.9em}nav.contents{margin:1em 0;padding:.5em .8em;background:#f6f6f6;font-size:.9em}
#summary img{max-height:60vh}"""


def _page(title: str, meta: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(meta)}</p>{body}</body></html>\n")


def explain_report(doc: dict[str, Any], arrays: dict[str, np.ndarray], out: Path, seed: int = 0, run_id: str | None = None,
                   evaluation: Path | None = None) -> Path:
    """Figures and ``index.html`` for an explain run.

    Args:
        doc: the explanation JSON.
        arrays: ``saliency/maps.npz`` contents (maps, labels, images, interval_beta, steps).
        out: folder to write into.
        run_id: the explain run's MLflow id, named in the summary's tune command.
        evaluation: the training run's ``evaluation/`` folder, shown first in the details.
    """
    from i2x.reporting.evaluation import evaluation_lines

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
    checks = shortcut_checks(doc)
    # every shortcut check and every finding, strongest first, then what only the model uses, up to 12 in all
    stated = list(dict.fromkeys(r["prototype"] for r in checks + named["findings"]))
    shown_ids = stated + [k for k in dict.fromkeys(r["prototype"] for r in named["model_only"]) if k not in stated][:max(0, 12 - len(stated))]
    last, first, never = progression_claims(doc)
    figs = {
        "classes": figures.plot_class_prototypes(images, doc, out / "class_prototypes.png"),
        "faithfulness": evidence.plot_faithfulness((doc.get("faithfulness") or {}).get("deletion", []), out / "faithfulness.png"),
        "locations": evidence.plot_locations(images, arrays["assignment"], labels, doc, shown_ids, out / "locations.png"),
        "saliency": figures.plot_saliency_over_training(images, maps, samples, labels, classes, steps, out / "saliency_over_training.png"),
        "progression": figures.plot_progression(doc["progression"], steps, out / "progression.png",
                                            named=[p["pair"] for p in (last, first, *never) if p]),
        "uncertain": figures.plot_uncertain(images, doc, steps, out / "uncertain.png"),
    }
    mass = np.abs(arrays["interval_beta"]).sum(axis=(0, 2))
    top = sorted(int(k) for k in np.argsort(-mass, kind="stable")[:24])
    figs["copies"] = evidence.plot_copies(images, copy_checks(doc), out / "copies.png")
    figs["beta"] = figures.plot_beta_heatmaps(arrays["interval_beta"], top, classes, steps, out / "beta_heatmap.png")
    said = statements(doc)
    run = doc["run"]
    lead = list({(r["prototype"], r["role"], r.get("class")): r for r in checks + (named["findings"] or named["model_only"])}.values())
    figs["findings"] = evidence.plot_findings(images, arrays["assignment"], doc, lead, out / "findings.png", title=_findings_caption(named, checks))
    judged = evaluation_lines(evaluation) if evaluation is not None else []
    sections = [  # (title, sentences, figures): rendered in order and listed in the index
        *([("How the model does on the test set", judged,
            [_img(evaluation / "confusion.png", "Test confusion matrix and accuracy per class",
                  "Rows: the true class, columns: the model's answer; off the diagonal are the mistakes named above."),
             _img(evaluation / "most_confused.png", "The most-confused pairs: test images of the true class taken for the other",
                  "Look for what these images share that the class's others lack: a mark, a background, a style.")])]
          if judged else []),
        *([("Shortcut check", said["shortcuts"], [_img(figs["copies"], "Rigid copies the final model uses: a few images of the class "
                                                        "that hold each, the copied pixels boxed")] if figs["copies"] else [])]
          if said["shortcuts"] else []),
        *([("Worth a look: cues that failed a gate", said["worth_a_look"], [])] if said["worth_a_look"] else []),
        ("What each class relies on", said["classes"], [_img(figs["classes"], "Shared and specialised prototypes per class (verified or not: see the causal check)")]
                 + [_folded(f"Prototype gallery ({len(galleries)} page{'s' if len(galleries) != 1 else ''}): exemplar patches and coverage per class",
                            [_img(g, f"Prototype gallery page {i + 1}") for i, g in enumerate(galleries)])]),
        ("Where the named prototypes sit", said["locations"] or ["No verified prototype is concentrated in one part of the image."],
                 [_img(figs["locations"], "Location maps of the verified prototypes",
                       "Left: how often each grid cell holds the prototype in its class's images (bright: often); right: exemplars, "
                       "the cell outlined in red, grey where the crop runs past the image.")]),
        ("Causal check", [s for s in said["faithfulness"] if "causal" in s or "ROAD" in s],
                 [_img(figs["faithfulness"], "Occlusion of each named prototype against matched random cells",
                       "A dot right of its blue square: occluding the prototype costs the class more than occluding as many "
                       "foreground-matched cells; the band is the 95% CI of that excess; green passed the causal check, red did not.")]),
        ("Where the model looks over training", [f"{len(steps)} checkpoints from step {steps[0]} to step {steps[-1]}."],
                 [_img(figs["saliency"], "Fixed samples across checkpoints",
                       "One image per row, one checkpoint per column: where the map settles, and when.")]),
        ("The order in which classes are separated", said["progression"], [_img(figs["progression"], "Confusions per checkpoint",
                       "A star marks the checkpoint where a pair counts as separated; the pairs the text names come first.")]),
        ("Uncertain prototypes", said["uncertain"], [_img(figs["uncertain"], "Oscillation of each uncertain prototype",
                       "Above zero the prototype pulls toward the first class of its pair, below toward the second.")]),
        ("How prototypes move confidence", [s for s in said["faithfulness"] if "causal" not in s and "ROAD" not in s],
                 [_img(figs["beta"], f"beta per interval for the {len(top)} prototypes with the largest total |beta|")]),
    ]
    body = _summary(doc, named, figs["findings"], [title for title, _, _ in sections], run_id) + "".join(_section(*s) for s in sections)
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
        body += _section("The study", [f"{_study_line(summary.get('study', {}))}; validation-set values, not test."], figures)
    index = out / "index.html"
    index.write_text(_page("I2X-guided fine-tuning", f"study {summary.get('study', {}).get('name', '')}", body))
    return index


def _study_line(record: dict[str, Any]) -> str:
    """``"5 trials (4 finished, 1 failed: stopped, killed or raised)"`` for the reports."""
    total, failed = record.get("n_trials", "?"), record.get("n_failed", 0)
    if not failed:
        return f"{total} trials"
    return f"{total} trials ({record.get('n_finished', '?')} finished, {failed} failed: stopped, killed or raised)"


def repair_report(summary: dict[str, Any], out: Path, figs: dict[str, Any]) -> Path:
    """``index.html`` of a tune run that acted on a finding: the group table before and after
    each strategy first, then what was changed in the training images, the verdicts, and the
    study. With no finding: the one line that says so."""
    from i2x.repair.summary import verdict_lines

    out.mkdir(parents=True, exist_ok=True)
    if summary.get("finding") is None:
        lines, links = [summary["said"]], []
        if summary.get("explain_run_id"):
            found = summary.get("findings") or []
            lines.append(f"The explanation (run {summary['explain_run_id']}) states {len(found)} finding(s)"
                         + (f": {', '.join(found[:8])}{' and more' if len(found) > 8 else ''}" if found else "") + ".")
            if summary.get("explain_report"):
                links.append(f"<a href=\"{html.escape(Path(summary['explain_report']).resolve().as_uri())}\">the explanation report</a>")
            if summary.get("explain_url"):
                links.append(f"<a href=\"{html.escape(summary['explain_url'])}\">the explain run in the MLflow UI</a>")
        if summary.get("what_would_act"):
            lines.append(summary["what_would_act"])
        body = _section("Nothing to act on", lines, [f"<p>Open {' or '.join(links)}.</p>"] if links else [])
        index = out / "index.html"
        index.write_text(_page("i2x repair", "no shortcut check to act on", body))
        return index
    rows = summary["strategies"]
    names = list(rows)
    head = "<tr><th>group</th>" + "".join(f"<th>{html.escape(n)}{' (reads group labels)' if rows[n]['true_groups'] else ''}</th>"
                                          for n in names) + "</tr>"

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    worst = "<tr><th>worst group</th>" + "".join(f"<td><b>{cell(rows[n]['worst_mean'])} +- {100 * rows[n]['worst_std']:.1f}</b></td>"
                                                 for n in names) + "</tr>"
    avg = "<tr><th>average</th>" + "".join(f"<td>{cell(rows[n]['accuracy_mean'])} +- {100 * rows[n]['accuracy_std']:.1f}</td>"
                                           for n in names) + "</tr>"
    body_rows = "".join("<tr><td>" + html.escape(g) + "</td>" + "".join(f"<td>{cell(rows[n]['groups'].get(g))}</td>" for n in names) + "</tr>"
                        for g in summary["group_names"])
    table = f"<table>{head}{worst}{avg}{body_rows}</table>"
    f = summary["finding"]
    by = "true groups (read only to score)" if summary["groups_source"] != "i2x" else f"i2x groups (class x {'the copy' if f.get('copy') else 'P' + str(f['prototype'])} present)"
    lines = [f"Acting on: {f['statement']}.",
             f"Test accuracy (%) per group before (the final model) and after each strategy, mean over "
             f"{rows['erm']['seeds']} seeds; groups: {by}."]
    sections = [_section("Did the repair help? Groups before and after", lines, [table, _img(figs.get("repair"), "Worst-group and average test accuracy per strategy")])]
    if figs.get("changed"):
        sections.append(_section("What was changed in the training images", [], [_img(figs["changed"], "Training (or held-out) images as the chosen i2x strategy changed or reweighted them")]))
    sections.append(_section("Verdicts (paired over seeds)", verdict_lines(summary), []))
    optuna = [_img(p, p.name) for p in figs.get("optuna", [])]
    if optuna:
        sections.append(_section("The study", [f"{_study_line(summary.get('study', {}))}; validation values (the i2x "
                                                "held-out set), not test."], optuna))
    index = out / "index.html"
    index.write_text(_page("i2x repair: acting on what the explanation found", f"study {summary.get('study', {}).get('name', '')}",
                           "".join(sections)))
    return index
