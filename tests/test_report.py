"""The report: statements from the explanation, figures, and the page in a real headless Chromium."""

import numpy as np
import pytest

from i2x.reporting.claims import headline, named_prototypes
from i2x.reporting.html import explain_report, tune_report
from i2x.reporting.power import power_line
from i2x.reporting.statements import statements

from .test_explanation import _explain


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    config, data, _ = smoke_run
    analysis, doc = _explain(smoke_run)
    arrays = {
        "maps": analysis.maps.numpy().astype(np.float16), "labels": data.train_y[data.analysis_idx].numpy(),
        "images": data.train_x[data.analysis_idx].numpy(), "interval_beta": analysis.structure.interval_beta,
        "steps": np.array([c["step"] for c in doc["checkpoints"]]), "assignment": analysis.protos.assignment,
    }
    out = tmp_path_factory.mktemp("report")
    return doc, explain_report(doc, arrays, out, evaluation=_evaluation(smoke_run, tmp_path_factory.mktemp("evaluation")))


def _evaluation(smoke_run, out):
    """The smoke model's test evaluation, written as a train run writes it."""
    import torch

    from i2x.reporting.evaluation import write_evaluation
    from i2x.training.checkpoints import list_checkpoints, model_from_checkpoint, read_checkpoint
    from i2x.training.loop import predictions

    _, data, result = smoke_run
    last = list_checkpoints(result.folder)[-1]
    pred = predictions(model_from_checkpoint(read_checkpoint(last), str(last)), data.test_x, 500, torch.device("cpu")).numpy()
    write_evaluation(out, pred, data.test_y.numpy(), data.test_x.numpy(), data.classes, None)
    return out


def test_statements_follow_the_explanation(report):
    doc, _ = report
    said = statements(doc)
    named = named_prototypes(doc)
    for u in (r for r in named["findings"] if r["role"] == "uncertain"):
        assert any(s.startswith(f"P{u['prototype']} oscillates between {u['pair'][0]} and {u['pair'][1]}") for s in said["uncertain"])
    for cls in doc["class_structure"]:
        found = [r for r in named["findings"] if r.get("class") == cls["name"] and r["role"] == "shared"]
        if found:
            top = max(found, key=lambda s: s["evidence"])["prototype"]
            assert any(s.startswith(f"Class {cls['name']} relies on") and f"P{top}" in s for s in said["classes"])
    # a prototype that failed the causal check is never stated as a finding
    for r in named["not_verified"]:
        assert not any(s.startswith(("Class", "Some")) and f"P{r['prototype']}:" in s for s in said["classes"])
    assert any("last pair separated" in s or "tie as the last separated" in s for s in said["progression"])


def test_claims_rest_on_counts_and_checks():
    """By hand: a pair whose peak is below min_peak_confusions is never called last
    separated; a verified prototype that failed the null is stated only as used by the model."""
    doc = {
        "config": {"explain": {"min_peak_confusions": 10, "concentration_share": 0.8}}, "checkpoints": [{"step": 0}, {"step": 5}, {"step": 9}],
        "classes": ["a", "b"], "background": [], "null": None, "faithfulness": None, "regression": {}, "metrics": {"noise_share": 0.1},
        "prototypes": [{"id": 0, "where": {"class": "a", "region": "top-left", "share": 1.0, "n_images": 40}},
                       {"id": 1, "where": {"class": "b", "region": "centre", "share": 0.5, "n_images": 40}}],
        "class_structure": [
            {"name": "a", "shared": [{"prototype": 0, "evidence": 0.2, "coverage": 0.9, "beats_null": False, "null_p": 0.4, "verified": True}],
             "specialised": []},
            {"name": "b", "shared": [{"prototype": 1, "evidence": 0.3, "coverage": 0.95, "beats_null": True, "null_p": 0.01, "verified": False}],
             "specialised": []}],
        "progression": [{"pair": ["a", "b"], "confusions": [4, 2, 0], "separated_at": 2, "toward_a": [], "toward_b": []}],
        "uncertain": [], "distinct_vs_separation_spearman": None,
    }
    said = statements(doc)
    assert said["progression"] == ["No class pair reached 10 confusions at any checkpoint, so no separation order is claimed "
                                   "(figure: progression.png)."]
    assert not any(s.startswith("Class") for s in said["classes"])
    assert any(s.startswith("The final model relies on P0 for a") for s in said["classes"])
    assert any(s.startswith("Not verified: P1 (b): labelled by the training history") for s in said["classes"])
    # a place alone is no warning (issue 43: the shortcut sentence was appended to every placed prototype, 16 digit strokes)
    assert said["locations"] == ["P0 sits in the top-left of the image in 100% of the 40 images of class a that contain it (figure: "
                                 "locations.png)."]


def test_a_correlation_or_a_count_is_stated_only_as_far_as_its_test_goes():
    """Issue 21: a Spearman of -0.07 is 'no relation', not 'pairs with more distinct
    prototypes were separated earlier'; a significant one is stated with its p-value; label
    counts that match the null's are said to come from class structure."""
    base = {"config": {"explain": {}}, "checkpoints": [{"step": 0}], "classes": ["a", "b"], "background": [], "faithfulness": None,
            "regression": {}, "metrics": {}, "prototypes": [], "class_structure": [], "progression": [], "uncertain": []}
    weak = statements({**base, "null": None, "distinct_vs_separation_spearman": -0.07, "distinct_vs_separation_p": 0.81})
    assert [s for s in weak["progression"] if "Spearman" in s] == [
        "No relation shown between a pair's distinct prototypes and when it was separated (Spearman -0.07, p = 0.81 against classes "
        "permuted); the paper's claim that such pairs separate first is not confirmed here."]
    strong = statements({**base, "null": None, "distinct_vs_separation_spearman": -0.62, "distinct_vs_separation_p": 0.004})
    assert any(s.startswith("Pairs whose classes have more distinct prototypes were separated earlier (Spearman -0.62 over all pairs, p = 0.004")
               for s in strong["progression"])
    null = {"n_permutations": 200, "counts": {"shared": {"real": 24, "null_mean": 23.0, "null_std": 1.7},
                                              "specialised": {"real": 0, "null_mean": 0.0, "null_std": 0.0},
                                              "uncertain": {"real": 6, "null_mean": 9.0, "null_std": 2.1}}}
    said = statements({**base, "null": null, "distinct_vs_separation_spearman": None})["uncertain"]
    # issue 45: "as a set, they come from class structure" sat beside "11 findings"; now it says what the count shows, no more
    assert any(s.startswith("The number of shared and uncertain candidate labels is about what the null makes") and
               "the count alone shows nothing beyond" in s and "beat the null one by one" in s for s in said), said
    apart = {**null, "counts": {**null["counts"], "shared": {"real": 24, "null_mean": 12.0, "null_std": 1.7}}}
    said = statements({**base, "null": apart, "distinct_vs_separation_spearman": None})["uncertain"]
    assert any(s.startswith("The number of uncertain candidate labels is about") for s in said), said


def test_report_files_and_a_large_k_stays_paginated(report, tmp_path):
    doc, index = report
    folder = index.parent
    for name in ("class_prototypes.png", "saliency_over_training.png", "progression.png", "beta_heatmap.png", "gallery-1.png"):
        assert (folder / name).stat().st_size > 1000
    assert (folder / "uncertain.png").is_file() == bool(doc["uncertain"])
    text = index.read_text()
    assert "src=\"data:image/png;base64," in text and "http://" not in text and "https://" not in text  # offline, no CDN
    assert "Detection power is not measured for synthetic" in text  # the smoke data set has no measured curve
    # 128 prototypes: pages of 16 in display order (uncertain first, then shared, specialised,
    # the most frequent), never one figure of 128 tiles; the report draws the first 4
    from i2x.reporting import figures

    big = [dict(doc["prototypes"][0], id=k, uncertain=k == 77, shared_by=[], specialised_for=[], n_samples=k) for k in range(128)]
    pages = figures.gallery_pages(big)
    assert [len(p) for p in pages] == [16] * 8 and len(figures.gallery_pages(big, 4)) == 4
    assert [p["id"] for p in pages[0][:3]] == [77, 127, 126]  # the uncertain one, then by frequency
    figures.plot_gallery(np.zeros((300, 1, 32, 32), np.uint8), pages[0], doc["classes"], "p", tmp_path / "g.png")


def test_tune_report_states_each_verdict(tmp_path):
    from i2x.tuning.comparison import summarize
    from i2x.tuning.perturbation import Plan

    plans = {"tuned": Plan("drop", 1.0, (1,), 1, 1, 0.01), "full->full": Plan("none", 0.0, (), 1, 1, 0.01),
             "random-target": Plan("drop", 1.0, (2,), 1, 1, 0.01), "paper": Plan("drop", 1.0, (1, 3), 1, 1, 0.02),
             "full->full (1+1)": Plan("none", 0.0, (), 1, 1, 0.02)}
    runs = lambda accs: [{"accuracy": a, "confusions": {"a<->b": 3}, "seed": i} for i, a in enumerate(accs)]  # noqa: E731
    summary = summarize({"tuned": runs([0.9, 0.91]), "paper": runs([0.9, 0.9]), "full->full": runs([0.9, 0.91]),
                         "random-target": runs([0.9, 0.9]), "full->full (1+1)": runs([0.95, 0.96])}, plans, "a<->b", {})
    text = tune_report(summary, tmp_path).read_text()
    assert "tuned vs full-&gt;full: accuracy +0.00 points" in text and "NO DETECTABLE DIFFERENCE" in text
    assert "paper vs full-&gt;full (1+1): accuracy -5.50 points" in text
    assert "drop alpha 1.00 on P1, P3 (every class)" in text and (tmp_path / "strategies.png").is_file()


def test_report_in_headless_chromium(report, browser, tmp_path):
    doc, index = report
    browser.get(index.as_uri())
    loaded = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
    assert len(loaded) >= 5 and all(done and width > 0 for done, width in loaded)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    # the first screen is the summary: its heading, the headline, the findings' picture, the index
    first = browser.execute_script("""
        const box = e => e ? e.getBoundingClientRect() : null;
        const img = document.querySelector('#summary img');
        return {summary: box(document.querySelector('#summary')).top, img: img ? box(img).top : null,
                nav: box(document.querySelector('nav.contents')).top, height: window.innerHeight,
                page: document.documentElement.scrollHeight};""")
    assert first["summary"] < 200 and first["img"] is not None and first["img"] < first["height"], first
    summary_text = browser.find_element("id", "summary").text
    assert headline(doc)[1:] in summary_text and "validation accuracy" in summary_text
    body = browser.find_element("tag name", "body").text
    said = statements(doc)
    for sentence in said["classes"] + said["uncertain"] + said["faithfulness"]:
        assert sentence in body
    assert "Causal check" in body
    # issue 24: the evaluation leads the details, with the confusion matrix drawn
    headings = [h.text for h in browser.find_elements("css selector", "section h2")]
    assert headings[:2] == ["Summary", "How the model does on the test set"], headings  # the first detail section
    matrix = browser.find_element("css selector", "img[alt='Test confusion matrix and accuracy per class']")
    assert matrix.get_property("naturalWidth") > 200
    assert "test images correctly" in body
    # the gallery is folded: present, but not in the page's height until opened
    assert browser.find_elements("css selector", "details img")
    shot = tmp_path / "first_screen.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_the_progression_chart_draws_the_pairs_the_text_names():
    """CIFAR-10 (fastnet, this round): an untrained model called everything 'deer', so the
    eight pairs with the highest peak were all deer pairs at checkpoint 0, while the text
    named cat/dog as the last pair separated; the chart left it out."""
    from i2x.reporting.claims import progression_claims
    from i2x.reporting.figures import progression_pairs

    deer = [{"pair": ["deer", c], "confusions": [200, 5, 1, 0], "separated_at": 1} for c in "abcdefgh"]
    catdog = {"pair": ["cat", "dog"], "confusions": [0, 40, 30, 3], "separated_at": 3}
    doc = {"config": {"explain": {"min_peak_confusions": 10}}, "progression": [*deer, catdog]}
    last, first, never = progression_claims(doc)
    assert last["pair"] == ["cat", "dog"] and first["pair"] == ["deer", "a"] and never == []
    drawn = [p["pair"] for p in progression_pairs(doc["progression"], [last["pair"], first["pair"]], top=8)]
    assert drawn[:2] == [["deer", "a"], ["cat", "dog"]] and len(drawn) == 8


def test_a_class_name_with_dollar_signs_is_drawn_as_text(tmp_path):
    """matplotlib reads ``$...$`` as mathtext: a class folder named ``$\\badcmd{$`` failed at
    the first figure, after the whole analysis. Every plot function draws strings as given;
    the undecorated function shows that the trap is live."""
    from i2x.reporting.figures import plot_beta_heatmaps

    classes = ["$\\badcmd{$", "dog"]
    beta = np.random.default_rng(0).normal(size=(3, 4, 2))
    path = plot_beta_heatmaps(beta, [0, 2], classes, [0, 10, 20, 30], tmp_path / "beta.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_beta_heatmaps.__wrapped__(beta, [0, 2], classes, [0, 10, 20, 30], tmp_path / "raw.png")


def test_exemplar_crops_are_one_size_and_the_red_box_sits_on_the_cell(tmp_path):
    """Issue 24: crops at the image border were smaller and of another aspect than the rest.
    Each crop is now the same square; the red box still frames the cell's own pixels."""
    from matplotlib.patches import Rectangle

    from i2x.explanation.prototypes import receptive_box
    from i2x.reporting.figures import plt, show_exemplars

    images = np.zeros((3, 1, 28, 28), dtype=np.uint8)
    exemplars = []
    for sample, cell in enumerate([(0, 0), (3, 3), (6, 4)]):  # a corner, the centre, the bottom edge
        box = receptive_box(cell, (7, 7), (28, 28), 1.0)
        images[sample, 0, box[0], box[1]] = 200 + sample  # the cell's top-left pixel, marked
        exemplars.append({"sample": sample, "box": box, "crop": receptive_box(cell, (7, 7), (28, 28), 4.0)})
    fig, axes = plt.subplots(1, 3)
    show_exemplars(axes, images, exemplars)
    shapes = {ax.images[0].get_array().shape for ax in axes}
    assert len(shapes) == 1, shapes
    for sample, ax in enumerate(axes):
        rect = next(p for p in ax.patches if isinstance(p, Rectangle))
        x, y = (round(v + 0.5) for v in rect.get_xy())
        assert ax.images[0].get_array()[y, x] == 200 + sample
    plt.close(fig)


def test_the_causal_check_figure_keeps_every_role_the_text_cites():
    """faithfulness.png drew the first 24 rows: all shared when there were many, while the
    text cited it for an uncertain finding."""
    from i2x.reporting.evidence import _by_role

    rows = [{"role": "shared", "prototype": k} for k in range(30)] + [{"role": "uncertain", "prototype": 100 + k} for k in range(3)]
    kept = _by_role(rows, 24)
    assert len(kept) == 24 and [r["prototype"] for r in kept if r["role"] == "uncertain"] == [100, 101, 102]
    assert [r["role"] for r in kept] == ["shared"] * 21 + ["uncertain"] * 3  # drawn grouped, in order
    assert _by_role(rows[:5], 24) == rows[:5]


def test_the_beta_heat_map_fills_its_rows(tmp_path, monkeypatch):
    """Five intervals drew a row of four and a lone fifth panel below a blank band: up to five
    now share one row, more fill rows of four."""
    import i2x.reporting.figures as figures

    opened = []
    real = figures.plt.subplots
    monkeypatch.setattr(figures.plt, "subplots", lambda *a, **k: opened.append(real(*a, **k)) or opened[-1])
    for intervals, shape in ((5, (1, 5)), (7, (1, 4)), (9, (2, 4))):
        beta = np.random.default_rng(0).normal(size=(intervals, 4, 2))
        figures.plot_beta_heatmaps(beta, [0, 2], ["a", "b"], list(range(0, 10 * (intervals + 1), 10)), tmp_path / "beta.png")
        fig, axes = opened[-1]
        assert axes.shape == shape and all(ax.axison for ax in axes.flat), (intervals, axes.shape)


def test_the_power_line_reads_the_reliance_it_needs_off_planted_runs():
    """Eight planted runs by the model's flip rate (stated or not): above 5% the mark was stated
    in 4 of 5 runs (80%, the bar), above 1% in only 4 of 6, so the line gives 5%, then 0 of 3
    below it and the clean runs' false statements; a data set without a curve is said to have
    no measured power, and a curve that never reaches the bar says so."""
    flips = [(0.001, False), (0.004, False), (0.01, False), (0.05, True), (0.15, True), (0.2, True), (0.22, False), (0.3, True)]
    match = {"data.train_limit": 12000, "train.epochs": 2, "model.name": "cnn", "model.width": 16, "data.analysis_size": 2000}
    curve = {"setting": "a cut", "n": 2000, "stated_as": "stated", "runs": [{"flip": f, "stated": s} for f, s in flips],
             "clean": {"runs": 5, "false": 1}, "match": match}
    config = {"data": {"train_limit": 12000, "analysis_size": 2000}, "train": {"epochs": 2}, "model": {"name": "cnn", "width": 16}}
    doc = {"run": {"dataset": "digits"}, "metrics": {"n_samples": 2000}, "config": config}
    line = power_line(doc, {"digits": curve})
    assert "at least 5% of the other classes' marked images" in line
    assert "stated in 4 of 5 runs" in line and "in 0 of 3" in line and "false one in 1 of 5 (a false rate of 1-72% fits" in line
    none = power_line(doc, {"digits": {**curve, "clean": {"runs": 3, "false": 0}}})
    assert "false one in 0 of 3 (a false rate of up to 71% fits that, 95%)" in none  # 1 - 0.025^(1/3)
    assert "this run analysed" not in line
    # issue 45: the line quoted a curve measured on a 12,000-image cut and 2 epochs for a run on the full set and 3 epochs
    full = {**doc, "config": {**config, "data": {"train_limit": 0, "analysis_size": 2000}, "train": {"epochs": 3}}}
    other = power_line(full, {"digits": curve})
    assert other.startswith("detection power is not measured for this setting") and "data.train_limit=0, train.epochs=3" in other, other
    assert power_line(doc, {}).startswith("detection power is not measured for digits")
    never = {**curve, "runs": [{"flip": f, "stated": False} for f, _ in flips]}
    assert "stated in 0 of 8 runs, and in fewer than 80% of them at any level" in power_line(doc, {"digits": never})

