"""The report's words: plain-language claims made from the explanation document, each
stated only as far as its control, null or test supports it (figures are named, not drawn)."""

from __future__ import annotations

from typing import Any

from i2x.explanation.rigid import RIGID_SHARE


def prototype_names(ids: list[int]) -> str:
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
    out["findings"].sort(key=lambda r: -effect_rank(doc, r))
    out["model_only"].sort(key=lambda r: -effect_rank(doc, r))
    return out


def effect_rank(doc: dict[str, Any], row: dict[str, Any]) -> float:
    """How strongly a label's prototype drives the model, for ranking findings: its excess
    drop over matched random cells (the causal check), weighted by how concentrated it is in
    one place (the share of its class's images with it in one region), so that a planted
    shortcut leads. 0 when it was not tested."""
    excess = next((d["excess"] for d in (doc.get("faithfulness") or {}).get("deletion", [])
                   if d["prototype"] == row["prototype"] and d["role"] == row["role"] and d["excess"] is not None), 0.0)
    where = (doc["prototypes"][row["prototype"]].get("where") or {}) if row["prototype"] < len(doc["prototypes"]) else {}
    return float(excess) * max(float(where.get("share") or 0.0), 0.1)


def shortcut_checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Class-specific prototypes that the final model needs and that alone push its class, from
    one place (shared, specialised or cue rows of the causal check):

    - the deletion test verified it (occluding it hurts the class beyond matched cells);
    - the transplant test found it sufficient: pasted into other classes' images at its place,
      it raises the class margin more than as many of the donor's other foreground cells
      (bootstrap CI above 0, BH-corrected);
    - it sits in one region in at least ``explain.concentration_share`` of its class's images,
      off the objects: where at least ``explain.shortcut_off_object`` of the other classes'
      images are blank canvas;
    - it is one cue (:func:`one_shape`): a rigid copy, some cell of it holding the same pixels
      in nearly every image of its class where it sits there (``rigid`` at least
      ``explain.shortcut_rigid``), or, where the route is turned on, of one shape wherever it
      sits and however bright (``consistent`` at least ``explain.shortcut_consistent``, off by
      default: on planted MNIST no level told a 3x3 mark from digit parts); documents written
      before a measure existed skip it.

    A planted mark in an empty corner is such a prototype; a distinctive part of an object (the
    crossing of an 8) passes the first three but usually sits where other digits have ink (MNIST:
    corner marks 0.42-0.91, digit parts median 0.23 but up to 0.65, so some pass); the rigid-copy
    condition stops those (18 MNIST power runs: every mark's prototype 1.0; the 15 digit parts
    and clean-run candidates past the off-object bar 0 to 0.88; the one other at 1.0 sat on the
    mark's corner of a 7 where no single prototype held the mark). Images with no blank canvas
    (natural photographs) give no shortcut check by this rule, and neither does a cue that
    overlaps where other classes' objects are (a jittered text watermark on MNIST: off-object
    0.26-0.35; bench/cue_grid.py); those are listed as worth a look. Whether the model
    *should* look there is the user's call, which the sentence asks.
    Ranked by how far off the objects it sits (``off_object``, then :func:`dominance`): over 18
    MNIST power runs (bench/shortcut_rules.py) off-object was the one measure that kept every
    planted mark (0.44-0.72) above most digit parts (median 0.23, a few up to 0.65), and it led
    with the mark in all 7 runs that stated it beside other checks, where dominance led in 5
    (a mark at rho 0.65 had 0.14, the digit part ranked above it 0.93). Each row carries its
    deletion and transplant rows. The training-history null is not asked: a cue in every image
    of a class is class structure to a within-class null by construction.
    """
    off_object = float(_explain_cfg(doc).get("shortcut_off_object", 0.4))
    out = [r for r in shortcut_candidates(doc) if (r["where"].get("off_object") or 0) >= off_object and one_shape(doc, r["where"])]
    return sorted(out, key=lambda r: (-float(r["where"].get("off_object") or 0.0), -dominance(r["transplant"])))


def one_shape(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether a prototype's pixels make one cue: a rigid copy (``rigid`` at least
    ``explain.shortcut_rigid``), or one shape wherever it sits and however bright
    (``consistent`` at least ``explain.shortcut_consistent``, below 1); documents written before
    a measure existed skip it."""
    cfg = _explain_cfg(doc)
    if where.get("rigid") is None:
        return True
    if where["rigid"] >= float(cfg.get("shortcut_rigid", 0.95)):
        return True
    consistent, level = where.get("consistent"), float(cfg.get("shortcut_consistent", 1.0))
    return consistent is not None and level < 1 and consistent >= level


def copy_checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Verified rigid copies (:mod:`i2x.explanation.copies`: the same pixels at one place in a
    share of one class's images, which pasted into other classes' images turn them into the
    class beyond the class's own pixels there), strongest push first; a copy that a prototype's
    shortcut check already states (same class, its rigid copy in the same ninth) is left to it."""
    stated = {(r["class"], r["where"].get("rigid_at")) for r in shortcut_checks(doc)}
    rows = [c for c in (doc.get("faithfulness") or {}).get("copies", []) if c["verified"] and (c["class"], c["where"]) not in stated]
    return sorted(rows, key=lambda c: -float(c["push"]))


def copy_sentence(c: dict[str, Any]) -> str:
    """One verified copy in words, with its control and uncertainty."""
    y0, x0, y1, x1 = c["box"]
    source = "other classes' images" if c.get("control") == "other classes" else "its other images"
    return (f"Class {c['class']} has a rigid copy in the {c['where']} of the image: the same {c['pixels']} pixels (rows {y0}-{y1 - 1}, "
            f"columns {x0}-{x1 - 1}) in {100 * c['share']:.0f}% of its images ({c['images']}) and {100 * c['others']:.1f}% of the other "
            f"classes'{_enrichment_words(c)}; pasted into {c['n_pairs']} images of other classes it turns {100 * c['flips']:.0f}% of them into {c['class']}, "
            f"against {100 * c['control_flips']:.0f}% for the same pixels from "
            f"{source} ({100 * c['push']:+.0f} points, CI "
            f"[{100 * c['ci'][0]:+.0f}, {100 * c['ci'][1]:+.0f}], p_BH {c['p_adjusted']:.2g}). Check whether this is a shortcut "
            f"(figure: copies.png).")


def _rose(rows: list[dict[str, Any]]) -> str:
    """Whether the saliency rose over training, said only as far as it holds: in most of the
    class's images that hold the prototype (``rise_share``; documents without it say nothing)."""
    shares = [r.get("rise_share") for r in rows]
    if any(v is None for v in shares):
        return ""
    low = min(shares)
    if low >= 0.5:
        return f" (it rose over training in {100 * low:.0f}% or more of the class's images that hold it)" if len(rows) > 1 else \
            f" (it rose over training in {100 * low:.0f}% of the class's images that hold it)"
    return f" (though it rose over training in only {100 * low:.0f}% of the class's images that hold {'one of them' if len(rows) > 1 else 'it'})"


def _fills_words(doc: dict[str, Any]) -> str:
    """The fills the causal check used, in words (``faithfulness.fills``)."""
    words = {"mean": "painted the data set's mean colour", "background": "erased to the image's background colour",
             "blur": "blurred", "road": "imputed from the pixels around them (ROAD)"}
    fills = (doc.get("config", {}).get("faithfulness") or {}).get("fills") or ["mean"]
    return "cells " + " and ".join(words.get(f, f) for f in fills)


def _enrichment_words(c: dict[str, Any]) -> str:
    """How far beyond chance its class holds the copy, after the scan's many tries (documents
    from before the enrichment test have none)."""
    if c.get("enrichment_p") is None:
        return ""
    how = f" by {c['scan_permutations']:,} label shuffles" if c.get("scan_permutations") else ""
    return f" (enrichment p {c['enrichment_p']:.2g}, corrected for the scan's {c['scan_tries']:,} tests{how})"


def _rigid_words(doc: dict[str, Any], where: dict[str, Any]) -> str:
    """The shape condition in words, when the document measured it: a rigid copy, or one shape
    (:func:`one_shape`)."""
    if where.get("rigid") is None:
        return ""
    if where["rigid"] < float(_explain_cfg(doc).get("shortcut_rigid", 0.95)) and where.get("consistent") is not None:
        return (f", and it has one shape though its pixels vary: its patches in the class's images correlate "
                f"{where['consistent']:.2f} (median over pairs) at their best shift, whatever their brightness")
    at = f" in the {where['rigid_at']} of the image" if where.get("rigid_at") else ""
    return (f", and it is a rigid copy{at} ({100 * where['rigid']:.0f}% of a cell's pixels the same in {100 * RIGID_SHARE:.0f}% "
            "of those images)")


def shortcut_candidates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows :func:`shortcut_checks` chooses from: every class claim the deletion test
    verified, the transplant test found sufficient, and that sits in one region in at least
    ``explain.concentration_share`` of its class's images, whatever its off-object share; in
    the causal check's order."""
    concentration = float(_explain_cfg(doc).get("concentration_share", 0.8))
    faith = doc.get("faithfulness") or {}
    transplant = {(d["prototype"], d["role"], d["classes"][0]): d for d in faith.get("transplant", [])}
    out = []
    for d in faith.get("deletion", []):
        where = doc["prototypes"][d["prototype"]].get("where") or {}
        moved = transplant.get((d["prototype"], d["role"], d["classes"][0]))
        if (d["role"] != "uncertain" and d["verified"] and moved is not None and moved["sufficient"]
                and (where.get("share") or 0) >= concentration and where.get("class") == d["classes"][0]):
            out.append({"prototype": d["prototype"], "role": d["role"], "class": d["classes"][0], "deletion": d, "transplant": moved,
                        "where": where})
    return out


def worth_a_look(doc: dict[str, Any], limit: int = 5) -> list[dict[str, Any]]:
    """Cues the final model needs and that alone push their class, which a gate of the shortcut
    check left out (issue 41): the deletion test verified it and the transplant test found it
    sufficient, it belongs to one class, and it is no shortcut check because it is not in one
    place, sits on the objects, or is neither a rigid copy nor of one shape. Ranked by how many
    gates it failed (one first: it missed a check by one condition), then by how many other
    classes' images its paste turns into its class beyond the control (on MNIST digit parts
    push hardest, and a small mark off the objects was otherwise ranked below them; bench/
    cue_grid.py); each row says which gates it failed (``why``). A user who recognises one as a
    shortcut repairs it with ``tune.act_on=P<k>``."""
    cfg = _explain_cfg(doc)
    concentration = float(cfg.get("concentration_share", 0.8))
    off_object = float(cfg.get("shortcut_off_object", 0.4))
    stated = {(r["prototype"], r["class"]) for r in shortcut_checks(doc)}
    faith = doc.get("faithfulness") or {}
    transplant = {(d["prototype"], d["role"], d["classes"][0]): d for d in faith.get("transplant", [])}
    background = set(doc.get("background") or [])
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for d in faith.get("deletion", []):
        k, cls = d["prototype"], d["classes"][0]
        moved = transplant.get((k, d["role"], cls))
        if d["role"] == "uncertain" or not d["verified"] or moved is None or not moved["sufficient"] or k in background:
            continue
        if (k, cls) in stated or (k, cls) in rows:
            continue
        where = doc["prototypes"][k].get("where") or {}
        why = []
        if where.get("class") != cls or (where.get("share") or 0) < concentration:
            why.append(f"it is not in one place ({100 * (where.get('share') or 0):.0f}% of its class's images in one region)")
        if (where.get("off_object") or 0) < off_object:
            why.append(f"it sits where other classes' images have content ({100 * (where.get('off_object') or 0):.0f}% empty there)")
        if not one_shape(doc, where):
            if float(cfg.get("shortcut_consistent", 1.0)) < 1 and where.get("consistent") is not None:
                why.append("it is neither a rigid copy nor of one shape: its pixels differ from image to image (a cue that moves, varies "
                           f"or is re-encoded, or a part of the object; its patches correlate {where['consistent']:.2f} at their best shift)")
            else:
                why.append("it is not a rigid copy: its pixels differ from image to image (a cue that moves, varies, is re-encoded or is "
                           "smaller than a grid cell, or a part of the object)")
        if not why:
            continue
        rows[(k, cls)] = {"prototype": k, "class": cls, "deletion": d, "transplant": moved, "where": where, "why": why,
                          "push": float(moved["flips"]) - float(moved["control_flips"])}
    return sorted(rows.values(), key=lambda r: (len(r["why"]), -r["push"]))[:limit]


def worth_a_look_sentence(r: dict[str, Any], coverage: dict[str, Any] | None = None) -> str:
    """One candidate of :func:`worth_a_look` in words, with its evidence."""
    d, moved, where = r["deletion"], r["transplant"], r["where"]
    place = (f"in the {where['region']} of the image in {100 * where['share']:.0f}% of the class's images that hold it"
             if where.get("region") and where.get("share") is not None else "in no one place")
    purity = f"; in {100 * coverage['own']:.0f}% of class {r['class']}'s images, at most {100 * coverage['other']:.0f}% of another's" if coverage else ""
    return (f"P{r['prototype']} -> {r['class']} ({place}{purity}): occluding it lowers the margin by {d['effect']:.2f} against "
            f"{d['baselines']['foreground']:.2f} for matched cells (p_BH {d['p_adjusted']:.2g}); pasted into {moved['n_pairs']} images of "
            f"other classes it turns {100 * moved['flips']:.0f}% of them into {r['class']} ({100 * moved['control_flips']:.0f}% for the "
            f"control). Not stated as a shortcut check because {'; and '.join(r['why'])}. If it is a shortcut, tune repairs it with "
            f"--overrides tune.act_on=P{r['prototype']}.")


def dominance(transplant: dict[str, Any]) -> float:
    """How much more a cue pushes its class than the rest of its image's foreground does, as a
    smoothed ratio ``excess / (|control| + 1)`` (logits). Reported beside a check and used to
    break ties; it does not tell a mark from a digit's part (18 MNIST power runs: marks 0.14-1.21,
    other candidates 0.12-7.95; bench/shortcut_rules.py)."""
    return float(transplant["excess"]) / (abs(float(transplant["control"])) + 1.0)


def headline(doc: dict[str, Any], limit: int = 4) -> str:
    """One line: shortcut checks first, then the findings (prototype -> class or pair, past the
    causal check and the null) by effect, or that there are none."""
    named = named_prototypes(doc)
    if doc.get("faithfulness") is None:
        return "causal check off: no prototype is stated as a finding"
    said = ([f"P{r['prototype']} -> {r['class']} ({r['where']['region']})" for r in shortcut_checks(doc)]
            + [f"a rigid copy -> {c['class']} ({c['where']})" for c in copy_checks(doc)])
    lead = ("shortcut check: " + ", ".join(said[:2]) + (f" and {len(said) - 2} more" if len(said) > 2 else "") + "; ") if said else ""
    found = named["findings"]
    if not found:
        return lead + f"no finding: none of {_plural(len(named['not_verified']) + len(named['model_only']), 'named prototype')} passed both the causal check and the permutation null"
    seen = findings_stated(doc)
    shown = seen[:limit]
    more = f" and {len(seen) - limit} more" if len(seen) > limit else ""
    return lead + f"{_plural(len(seen), 'finding')} (past the causal check and the null): {', '.join(shown)}{more}"


def findings_stated(doc: dict[str, Any]) -> list[str]:
    """The findings the report states, ``P<k> -> <class or pair>``, each once: prototypes
    past both the causal check and the permutation null. Their number is the explain run's
    ``n_findings`` metric; ``n_verified`` counts every prototype past the causal check."""
    found = named_prototypes(doc)["findings"] if doc.get("faithfulness") is not None else []
    return list(dict.fromkeys(f"P{r['prototype']} -> {r['class'] if 'class' in r else '/'.join(r['pair'])}" for r in found))


def fit_line(metrics: dict[str, Any]) -> str:
    """The causal count and the regression's held-out R^2 beside its class-only baseline."""
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    checked = (f"{metrics['n_verified']} of {_plural(metrics['n_named'], 'named prototype')} passed the causal check"
               if metrics.get("n_named") is not None else "causal check off")
    both, alone = metrics.get("r2_prototypes_plus_class"), metrics.get("r2_class")
    added = "n/a" if None in (both, alone) else f"{both - alone:+.3f}"
    return (f"{checked}; held-out R^2 over all sample-intervals {num(metrics.get('mean_r2_heldout'))} from prototype changes, "
            f"{num(alone)} from the class alone, {num(both)} from both (what prototypes add to the class: {added})")


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
