"""The report: statements from the explanation, figures, and the page in a real headless Chromium."""

import os
import shutil

import numpy as np
import pytest

from i2x.report import explain_report, statements, tune_report

from .test_explanation import _explain

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    config, data, _ = smoke_run
    analysis, doc = _explain(smoke_run)
    arrays = {
        "maps": analysis.maps.numpy().astype(np.float16), "labels": data.train_y[data.analysis_idx].numpy(),
        "images": data.train_x[data.analysis_idx].numpy(), "interval_beta": analysis.structure.interval_beta,
        "steps": np.array([c["step"] for c in doc["checkpoints"]]),
    }
    out = tmp_path_factory.mktemp("report")
    return doc, explain_report(doc, arrays, out)


def test_statements_follow_the_explanation(report):
    doc, _ = report
    said = statements(doc)
    for u in doc["uncertain"]:
        assert any(s.startswith(f"P{u['prototype']} oscillates between {u['pair'][0]} and {u['pair'][1]}") for s in said["uncertain"])
    for cls in doc["class_structure"]:
        if cls["shared"]:
            top = max(cls["shared"], key=lambda s: s["evidence"])["prototype"]
            assert any(s.startswith(f"Class {cls['name']} relies on") and f"P{top}" in s for s in said["classes"])
    assert any("last pair separated" in s for s in said["progression"])


def test_report_files_and_a_large_k_stays_paginated(report, tmp_path):
    doc, index = report
    folder = index.parent
    for name in ("class_prototypes.png", "saliency_over_training.png", "progression.png", "beta_heatmap.png", "gallery-1.png"):
        assert (folder / name).stat().st_size > 1000
    assert (folder / "uncertain.png").is_file() == bool(doc["uncertain"])
    text = index.read_text()
    assert "src=\"data:image/png;base64," in text and "http://" not in text and "https://" not in text  # offline, no CDN
    # 128 prototypes: at most 4 gallery pages of 16, never one figure of 128 tiles
    big = dict(doc, prototypes=[dict(doc["prototypes"][k % 8], id=k) for k in range(128)])
    from i2x import viz

    pages = [viz.plot_gallery(np.zeros((300, 1, 32, 32), np.uint8), big["prototypes"][i : i + 16], doc["classes"], "p", tmp_path / f"g{i}.png")
             for i in range(0, 64, 16)]
    assert len(pages) == 4


def test_tune_report_states_the_verdict(tmp_path):
    from i2x.perturbation import Plan
    from i2x.tuning import summarize

    plans = {n: Plan("drop", 1.0, (1,), 1, 1, 0.01) for n in ("tuned", "paper", "full->full", "random-target")}
    runs = lambda accs: [{"accuracy": a, "confusions": {"a<->b": 3}, "seed": i} for i, a in enumerate(accs)]  # noqa: E731
    summary = summarize({"tuned": runs([0.9, 0.91]), "paper": runs([0.9, 0.9]), "full->full": runs([0.9, 0.91]),
                         "random-target": runs([0.9, 0.9])}, plans, "a<->b", {})
    text = tune_report(summary, tmp_path).read_text()
    assert "NO GAIN" in text and "full-&gt;full" in text and (tmp_path / "strategies.png").is_file()


def test_report_in_headless_chromium(report, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    doc, index = report
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(index.as_uri())
        loaded = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        assert len(loaded) >= 5 and all(done and width > 0 for done, width in loaded)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        body = driver.find_element("tag name", "body").text
        assert doc["uncertain"], "the smoke run is expected to have uncertain prototypes"
        for u in doc["uncertain"]:
            assert f"P{u['prototype']} oscillates between {u['pair'][0]} and {u['pair'][1]}" in body
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
