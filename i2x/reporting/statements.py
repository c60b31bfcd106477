"""The report's sentences by section, made from the explanation document with the claim
rules of :mod:`i2x.reporting.claims`: each finding stated only as far as its test supports it,
naming the figure that backs it."""

from __future__ import annotations

from typing import Any

from i2x.reporting.claims import (
    _explain_cfg,
    _fills_words,
    _plural,
    _rigid_words,
    _rose,
    _share,
    copy_checks,
    copy_sentence,
    named_prototypes,
    progression_claims,
    prototype_names,
    shortcut_checks,
    worth_a_look,
    worth_a_look_sentence,
)


def statements(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Plain-language findings, generated from the explanation, by report section. Only
    prototypes that passed the causal check are stated as findings; each sentence names
    the figure that backs it."""
    out: dict[str, list[str]] = {"shortcuts": [], "worth_a_look": [], "classes": [], "locations": [], "progression": [], "uncertain": [],
                                 "faithfulness": []}
    for r in shortcut_checks(doc):
        d, moved, where = r["deletion"], r["transplant"], r["where"]
        out["shortcuts"].append(
            f"P{r['prototype']} drives class {r['class']} from the {where['region']} of the image ({100 * where['share']:.0f}% of the "
            f"{where['n_images']} images of class {r['class']} that contain it): pasted alone into {moved['n_pairs']} images of other "
            f"classes it raises the {r['class']} margin by {moved['rise']:+.2f} logits against {moved['control']:+.2f} for as many "
            f"other cells of the same images (difference CI [{moved['ci'][0]:+.2f}, {moved['ci'][1]:+.2f}]), turning "
            f"{100 * moved['flips']:.0f}% of them into {r['class']} ({100 * moved['control_flips']:.0f}% for the control); "
            f"occluding it lowers the margin by {d['effect']:.2f} against {d['baselines']['foreground']:.2f} for matched cells; "
            f"{100 * where['off_object']:.0f}% of the other classes' images are empty there"
            f"{_rigid_words(doc, where)}. "
            f"Check whether this is a shortcut (figures: locations.png, findings.png).")
    out["shortcuts"] += [copy_sentence(c) for c in copy_checks(doc)]
    for r in worth_a_look(doc):
        cov = (doc["prototypes"][r["prototype"]].get("coverage") or {}) if r["prototype"] < len(doc["prototypes"]) else {}
        own = cov.get(r["class"]) if isinstance(cov, dict) else None
        others = [v for c, v in cov.items() if c != r["class"]] if isinstance(cov, dict) else []
        out["worth_a_look"].append(worth_a_look_sentence(r, {"own": own, "other": max(others)} if own is not None and others else None))
    cfg = _explain_cfg(doc)
    protos = {p["id"]: p for p in doc["prototypes"]}
    checked = doc.get("faithfulness") is not None
    named = named_prototypes(doc)
    for cls in doc["class_structure"]:
        found = [r for r in named["findings"] if r.get("class") == cls["name"]]
        shared = sorted((r for r in found if r["role"] == "shared"), key=lambda r: -(r["evidence"] or 0))[:3]
        if shared:
            cov = min(r["coverage"] for r in shared)
            out["classes"].append(f"Class {cls['name']} relies on {prototype_names([r['prototype'] for r in shared])}: "
                                  f"{'each is' if len(shared) > 1 else 'it is'} in {_share(cov, len(shared) > 1)} of its samples, changes in "
                                  f"{'their' if len(shared) > 1 else 'its'} saliency moved with the class's confidence beyond a "
                                  f"within-class permutation null{_rose(shared)}, and occluding {'each' if len(shared) > 1 else 'it'} hurts "
                                  f"the class more than occluding matched random cells under every fill "
                                  f"({_fills_words(doc)}) (figures: class_prototypes.png, faithfulness.png).")
        for r in sorted((r for r in found if r["role"] == "specialised"), key=lambda r: -(r["evidence"] or 0))[:2]:
            out["classes"].append(f"Some {cls['name']} samples use P{r['prototype']} instead: it is in {100 * r['group_coverage']:.0f}% of one "
                                  f"learning group but only {100 * r['coverage']:.0f}% of the class, a variant within the class "
                                  f"(figures: class_prototypes.png, faithfulness.png).")
        used = sorted({r["prototype"] for r in named["model_only"] if r.get("class") == cls["name"]})
        if used:
            out["classes"].append(f"The final model relies on {prototype_names(used)} for {cls['name']} (occluding "
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
    stated = {r["prototype"] for r in named["findings"] + named["model_only"] + named["not_verified"]}
    for group in doc.get("aliases") or []:
        if stated & set(group):
            out["classes"].append(f"{prototype_names(group)} occur in exactly the same images, so the training history cannot tell "
                                  f"them apart: they are fitted as one and share their labels; the causal check tests each on its own.")
    background = doc.get("background", [])
    if background:
        reasons = doc.get("background_reasons") or {}
        why = {"in most classes": "in most images of most classes", "blank": "on near-constant cells (empty canvas)",
               "border ring": "on the image's border, all around"}
        by_reason: dict[str, list[int]] = {}
        for k in background:
            by_reason.setdefault(reasons.get(str(k), "in most classes"), []).append(k)
        said = "; ".join(f"{prototype_names(ks)} {why[r]}" for r, ks in by_reason.items())
        out["classes"].append(f"Background, never counted as a class's evidence: {said} (figure: gallery-1.png).")

    concentration = float(cfg.get("concentration_share", 0.8))
    for k in sorted({r["prototype"] for r in named["findings"] + named["model_only"]}):
        where = protos[k]["where"]
        if where["share"] is not None and where["share"] >= concentration:
            out["locations"].append(f"P{k} sits in the {where['region']} of the image in {100 * where['share']:.0f}% of the "
                                    f"{where['n_images']} images of class {where['class']} that contain it (figure: locations.png).")

    steps = [c["step"] for c in doc["checkpoints"]]
    min_peak = int(cfg.get("min_peak_confusions", 10))
    last, first, never = progression_claims(doc)
    if last is not None:
        qualified = [p for p in doc["progression"] if p["separated_at"] is not None and max(p["confusions"]) >= min_peak]
        for which, pick in (("last", last), ("first", first or last)):
            tied = [p for p in qualified if p["separated_at"] == pick["separated_at"]]
            at = f"at checkpoint {pick['separated_at']} (step {steps[pick['separated_at']]})"
            if which == "first" and first is None and len(tied) == 1:
                continue
            if len(tied) > 1:
                names = ", ".join(f"{p['pair'][0]}/{p['pair'][1]}" for p in tied[:6]) + (f" and {len(tied) - 6} more" if len(tied) > 6 else "")
                out["progression"].append(f"{len(tied)} pairs tie as the {which} separated, {at}: {names}; the order among them "
                                          f"is not known (figure: progression.png).")
            elif which == "last":
                out["progression"].append(f"{pick['pair'][0]} and {pick['pair'][1]} were the last pair separated, {at}, after up to "
                                          f"{_plural(max(pick['confusions']), 'confusion')} (figure: progression.png).")
            else:
                out["progression"].append(f"{pick['pair'][0]} and {pick['pair'][1]} were separated first, {at} (figure: progression.png).")
    else:
        out["progression"].append(f"No class pair reached {min_peak} confusions at any checkpoint, so no separation order is claimed "
                                  f"(figure: progression.png).")
    for p in never:
        out["progression"].append(f"{p['pair'][0]} and {p['pair'][1]} are never fully separated: still "
                                  f"{_plural(p['confusions'][-1], 'confusion')} at the last checkpoint (figure: progression.png).")
    rho, p = doc.get("distinct_vs_separation_spearman"), doc.get("distinct_vs_separation_p")
    if rho is not None and p is not None and p < 0.05:
        out["progression"].append(f"Pairs whose classes have more distinct prototypes were separated {'earlier' if rho < 0 else 'later'} "
                                  f"(Spearman {rho:+.2f} over all pairs, p = {p:.3f} against classes permuted; the paper expects earlier).")
    elif rho is not None:
        out["progression"].append(f"No relation shown between a pair's distinct prototypes and when it was separated (Spearman "
                                  f"{rho:+.2f}{f', p = {p:.2f} against classes permuted' if p is not None else ', untested'}); the "
                                  f"paper's claim that such pairs separate first is not confirmed here.")

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
        out["uncertain"].append(f"{prototype_names(other_u)} scored as oscillating but failed the permutation null or the causal check: not findings "
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
        alike = [role for role in ("shared", "specialised", "uncertain")
                 if c[role]["real"] and abs(c[role]["real"] - c[role]["null_mean"]) <= 2 * max(c[role]["null_std"], 0.5)]
        if alike:
            out["uncertain"].append(f"The number of {' and '.join(alike)} candidate labels is about what the null makes with the link "
                                    f"between saliency and confidence broken, so the count alone shows nothing beyond which classes "
                                    f"contain which prototypes; the labels stated above are the ones that beat the null one by one.")

    reg = doc.get("regression") or {}
    parts = reg.get("heldout_r2") or {}
    r2 = parts.get("all") or {}
    if r2.get("prototypes") is not None and r2.get("class") is not None and r2.get("prototypes+class") is not None:
        added = r2["prototypes+class"] - r2["class"]
        verdict = ("predict confidence changes better than the class alone" if r2["prototypes"] > r2["class"]
                   else "predict confidence changes less well than the class alone")
        adds = f"and add {added:+.2f} of R^2 to it" if added > 0 else f"and add nothing to it ({added:+.2f})"
        groups, noise = parts.get("groups") or {}, parts.get("noise") or {}
        split = "" if groups.get("prototypes") is None or noise.get("prototypes") is None else (
            f"; in the learning groups {groups['prototypes']:.2f} vs {groups['class']:.2f}, in HDBSCAN noise "
            f"({100 * doc['metrics']['noise_share']:.0f}% of samples) {noise['prototypes']:.2f} vs {noise['class']:.2f}")
        out["faithfulness"].append(
            f"Prototype changes {verdict} {adds}: held-out R^2 over all sample-intervals {r2['prototypes']:.2f} vs the class "
            f"alone {r2['class']:.2f}, both {r2['prototypes+class']:.2f}, group mean alone {r2['group_mean']:.2f} "
            f"({reg.get('folds')}-fold, {reg.get('mode')} fit{split}; figure: beta_heatmap.png).")
    faith = doc.get("faithfulness")
    if faith:
        sm = faith["summary"]
        if sm["n_tested"]:
            out["faithfulness"].append(f"{sm['n_verified']} of {sm['n_tested']} named prototypes passed the causal check (mean excess "
                                       f"drop of the class margin over matched random cells {sm['mean_excess']:+.2f} logits; figure: faithfulness.png).")
        road = faith["road"]
        if road:
            better = road["gradcam_ci"][0] > road["random_ci"][1]
            out["faithfulness"].append(f"ROAD (pytorch-grad-cam, {road['n_images']} images): the final Grad-CAM maps score "
                                       f"{road['gradcam']:.3f} [{road['gradcam_ci'][0]:.3f}, {road['gradcam_ci'][1]:.3f}] against "
                                       f"{road['random']:.3f} for random maps: {'more' if better else 'not clearly more'} faithful than chance.")
    return out
