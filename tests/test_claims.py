"""Every kind of sentence the report prints about a model (issue 45), each with a planted
answer where it must appear and one where it must not: a sentence says what its test showed,
no more. The documents are built by hand, so the truth of each case is known."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from i2x.reporting.statements import statements


def _doc() -> dict[str, Any]:
    """A two-class document with one shared prototype (P0, class a) past both checks."""
    return {
        "config": {"explain": {"min_peak_confusions": 10, "concentration_share": 0.8}, "faithfulness": {"fills": ["mean", "background"]}},
        "checkpoints": [{"step": s} for s in (0, 10, 20, 30)], "classes": ["a", "b", "c"], "background": [], "null": None,
        "faithfulness": {"deletion": [], "transplant": [], "copies": [], "road": None,
                         "summary": {"n_named": 1, "n_tested": 1, "n_verified": 1, "share_verified": 1.0, "mean_excess": 0.5}},
        "regression": {}, "metrics": {"noise_share": 0.6},
        "prototypes": [{"id": 0, "where": {"class": "a", "region": "centre", "share": 0.5, "n_images": 40}},
                       {"id": 1, "where": {"class": "b", "region": "top-left", "share": 0.9, "n_images": 40}}],
        "class_structure": [
            {"name": "a", "shared": [{"prototype": 0, "evidence": 0.2, "coverage": 0.9, "beats_null": True, "null_p": 0.01,
                                      "verified": True, "rise_share": 0.9}], "specialised": []},
            {"name": "b", "shared": [], "specialised": []}, {"name": "c", "shared": [], "specialised": []}],
        "progression": [], "uncertain": [], "distinct_vs_separation_spearman": None,
    }


def _pair(a: str, b: str, at: int | None, peak: int = 30) -> dict[str, Any]:
    confusions = [peak, peak // 2, 1, 0] if at is not None else [peak, peak, peak, peak]
    return {"pair": [a, b], "confusions": confusions, "separated_at": at, "toward_a": [], "toward_b": []}


def _with(change) -> dict[str, Any]:  # noqa: ANN001
    doc = copy.deepcopy(_doc())
    change(doc)
    return doc


def _set(path: str, value: Any):  # noqa: ANN202
    def change(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node = doc
        for key in head:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return change


def _said(doc: dict[str, Any]) -> str:
    return "\n".join(s for part in statements(doc).values() for s in part)


R2_ADDS = {"all": {"prototypes": 0.30, "group_mean": 0.0, "class": 0.25, "prototypes+class": 0.40},
           "groups": {"prototypes": 0.4, "group_mean": 0.0, "class": 0.2, "prototypes+class": 0.5},
           "noise": {"prototypes": 0.2, "group_mean": 0.0, "class": 0.3, "prototypes+class": 0.33}}
R2_NOTHING = {"all": {"prototypes": 0.23, "group_mean": 0.0, "class": 0.28, "prototypes+class": 0.27},
              "groups": {"prototypes": 0.45, "group_mean": 0.0, "class": 0.2, "prototypes+class": 0.5},  # the learning groups alone flatter
              "noise": {"prototypes": 0.1, "group_mean": 0.0, "class": 0.32, "prototypes+class": 0.3}}
ROAD = {"n_images": 64, "gradcam": 0.30, "random": 0.10, "gradcam_ci": [0.25, 0.35], "random_ci": [0.05, 0.15]}

# (kind, a document where the sentence must appear, one where it must not, the words that mark it)
CASES = [
    ("a class relies on a prototype", _doc(), _with(_set("class_structure.0.shared.0.verified", False)), "Class a relies on P0"),
    ("its saliency rose in most images", _doc(), _with(_set("class_structure.0.shared.0.rise_share", 0.14)),
     "it rose over training in 90% of the class's images"),
    ("its saliency rose in few images", _with(_set("class_structure.0.shared.0.rise_share", 0.14)), _doc(),
     "though it rose over training in only 14%"),
    ("a regression moves with, never pushes", _doc(), _doc(), "moved with the class's confidence"),
    ("the fills the causal check used", _doc(), _with(_set("class_structure.0.shared.0.verified", False)),
     "under every fill (cells painted the data set's mean colour and erased to the image's background colour)"),
    ("the model relies on it, the history does not single it out", _with(_set("class_structure.0.shared.0.beats_null", False)), _doc(),
     "The final model relies on P0 for a"),
    ("not verified", _with(_set("class_structure.0.shared.0.verified", False)), _doc(), "Not verified: P0 (a)"),
    ("a location, where one place holds it", _with(_set("prototypes.0.where.share", 0.9)), _doc(), "P0 sits in the centre"),
    ("background is named and never evidence", _with(_set("background", [1])), _doc(), "Background, never counted as a class's evidence: P1"),
    ("the last pair separated", _with(_set("progression", [_pair("a", "b", 1), _pair("a", "c", 2)])),
     _with(_set("progression", [_pair("a", "b", 2), _pair("a", "c", 2)])), "a and c were the last pair separated, at checkpoint 2"),
    ("a tie is said as a tie", _with(_set("progression", [_pair("a", "b", 2), _pair("a", "c", 2), _pair("b", "c", 1)])),
     _with(_set("progression", [_pair("a", "b", 1), _pair("a", "c", 2), _pair("b", "c", 3)])),
     "2 pairs tie as the last separated, at checkpoint 2 (step 20): a/b, a/c; the order among them is not known"),
    ("no order below the confusion floor", _with(_set("progression", [_pair("a", "b", 1, peak=4), _pair("a", "c", 2, peak=4)])),
     _with(_set("progression", [_pair("a", "b", 1), _pair("a", "c", 2)])), "No class pair reached 10 confusions"),
    ("a pair never separated", _with(_set("progression", [_pair("a", "b", None)])), _with(_set("progression", [_pair("a", "b", 1)])),
     "a and b are never fully separated"),
    ("prototypes add to the class, over all sample-intervals", _with(_set("regression", {"heldout_r2": R2_ADDS, "folds": 5, "mode": "centred"})),
     _with(_set("regression", {"heldout_r2": R2_NOTHING, "folds": 5, "mode": "centred"})), "and add +0.15 of R^2 to it"),
    ("prototypes add nothing, though the learning groups alone flatter them",
     _with(_set("regression", {"heldout_r2": R2_NOTHING, "folds": 5, "mode": "centred"})),
     _with(_set("regression", {"heldout_r2": R2_ADDS, "folds": 5, "mode": "centred"})), "less well than the class alone and add nothing to it (-0.01)"),
    ("ROAD better than random maps", _with(_set("faithfulness.road", ROAD)),
     _with(_set("faithfulness.road", {**ROAD, "gradcam_ci": [0.12, 0.3]})), "random maps: more faithful than chance"),
]


@pytest.mark.parametrize(("kind", "yes", "no", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_sentence_appears_where_its_test_holds_and_only_there(kind, yes, no, words):
    assert words in _said(yes), (kind, _said(yes))
    if kind != "a regression moves with, never pushes":
        assert words not in _said(no), (kind, _said(no))


def test_no_sentence_claims_a_push_or_a_shortcut_warning_on_every_place():
    """Causal words for a regression ('pushed') and the shortcut warning once appended to every
    placed prototype (16 digit strokes on clean MNIST) are gone from every kind of sentence."""
    for _, yes, no, _ in CASES:
        for doc in (yes, no):
            text = _said(doc)
            assert "pushed" not in text and "can be a shortcut" not in text and "learning groups only" not in text


def _cue_doc(rigid: float, consistent: float | None = None) -> dict[str, Any]:
    """P1, a cue of class b in the top-left of 90% of its images, off the objects, that the model
    needs (deletion) and that alone turns other images into b (paste); ``rigid``: how much of a
    cell's pixels stay the same (1.0 a pasted copy, 0.0 a mark that moves and varies);
    ``consistent``: how alike its patches are at their best shift (None: not measured)."""
    doc = _doc()
    doc["config"]["explain"].update({"shortcut_off_object": 0.4, "shortcut_rigid": 0.95, "shortcut_consistent": 0.95})
    doc["prototypes"][1]["where"] = {"class": "b", "region": "top-left", "share": 0.9, "n_images": 40, "off_object": 0.7, "rigid": rigid}
    if consistent is not None:
        doc["prototypes"][1]["where"]["consistent"] = consistent
    doc["prototypes"][1]["coverage"] = {"a": 0.01, "b": 0.99, "c": 0.0}
    doc["faithfulness"]["deletion"] = [{"prototype": 1, "role": "cue", "classes": ["b"], "verified": True, "effect": 3.1, "excess": 2.9,
                                        "baselines": {"foreground": 0.2, "uniform": 0.1, "gradcam": 2.0}, "p_adjusted": 1e-23}]
    doc["faithfulness"]["transplant"] = [{"prototype": 1, "role": "cue", "classes": ["b"], "sufficient": True, "n_pairs": 300,
                                          "flips": 0.76, "control_flips": 0.05, "rise": 4.0, "control": 0.3, "excess": 3.7,
                                          "ci": [3.0, 4.4]}]
    return doc


def test_a_cue_that_failed_only_the_shape_gate_is_worth_a_look_with_its_evidence():
    """Issue 41: a cue which the model needs (deletion p 1e-23) and whose paste turns 76% of
    other digits, but whose pixels vary and whose patches are not of one shape (0.6), is listed,
    with the gate it failed and how to act on it; the same cue as a rigid copy, or of one shape
    (0.95: a mark that moves and varies), is a shortcut check instead, and says which."""
    varied = statements(_cue_doc(rigid=0.0, consistent=0.6))
    assert varied["shortcuts"] == [] and len(varied["worth_a_look"]) == 1
    said = varied["worth_a_look"][0]
    assert said.startswith("P1 -> b (in the top-left of the image in 90% of the class's images that hold it; in 99% of class b's images, "
                           "at most 1% of another's)"), said
    assert "turns 76% of them into b (5% for the control)" in said and "neither a rigid copy nor of one shape" in said
    assert "correlate 0.60" in said and "tune.act_on=P1" in said
    rigid = statements(_cue_doc(rigid=1.0))
    assert rigid["worth_a_look"] == [] and len(rigid["shortcuts"]) == 1 and "it is a rigid copy" in rigid["shortcuts"][0]
    moving = statements(_cue_doc(rigid=0.0, consistent=0.95))
    assert moving["worth_a_look"] == [] and len(moving["shortcuts"]) == 1
    assert "it has one shape though its pixels vary: its patches in the class's images correlate 0.95" in moving["shortcuts"][0]


def test_tune_acts_on_a_prototype_the_user_names_and_refuses_one_the_report_does_not_hold():
    from i2x.platform.errors import I2XError
    from i2x.runs.repair import named_finding

    finding = named_finding(_cue_doc(rigid=0.0), 1, ["a", "b", "c"])
    assert (finding.prototype, finding.cls, finding.class_name) == (1, 1, "b") and "tune.act_on=P1" in finding.statement
    with pytest.raises(I2XError, match="tune.act_on=P0: the explanation verified no class cue P0"):
        named_finding(_cue_doc(rigid=0.0), 0, ["a", "b", "c"])
