"""The study report: its content for readers, and in a real browser (Debian's Chromium via Playwright)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.experiment.conftest import smoke_spec as _spec

from sonosynth.study import run_study

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A smoke study with quality metrics, two fractions and three folds."""
    from tests.experiment import conftest

    monkeypatch = pytest.MonkeyPatch()
    from sonosynth import config

    real = config._presets
    monkeypatch.setattr(config, "_presets", lambda c: {"smoke": {}, "cpu": {}} if c == "noisy-copy" else real(c))
    conftest.NoisyCopyGenerator.fits.clear()
    run = tmp_path_factory.mktemp("report") / "run"
    outcome = run_study(_spec(quality={"enabled": True, "features": "classifier"}), run, progress=False)
    monkeypatch.undo()
    return outcome


def test_the_report_reads_as_a_report(full_run):
    text = full_run.report.html_path.read_text()
    for part in ("Verdict.", "Protocol.", "Runtime.", "early-stopping set", "95% CI", "macro-F1",
                 "Training curves", "row-normalised", "random real images of the class", "Contents", "<details"):
        assert part in text, part
    assert "SSIM to source is computed for Copy, against the sample&#x27;s own training image" in text
    assert "<th>classifier</th>" not in text.split("fetal-study layout")[1].split("</table>")[0]
    assert "http" not in text.split("<body>")[1].split("Exact spec")[0]  # works offline


def test_a_one_fold_report_says_so_instead_of_a_spread(tmp_path):
    spec = _spec(split={"folds": 3, "minority": "pneumonia", "keep": [1.0], "run_folds": [0]})
    text = run_study(spec, tmp_path / "run", progress=False).report.html_path.read_text()
    assert "one fold (single values, no spread or CI)" in text and "over 1 folds" not in text
    assert "no paired comparison" in text


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_the_report_fits_1280_px_and_every_image_loads_in_a_browser(full_run):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(full_run.report.html_path.as_uri())
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            too_wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .map(e => e.tagName + ' ' + (e.textContent || '').slice(0, 40))""")
            assert too_wide == []
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")
            assert images and all(complete and width > 0 for complete, width in images)
            shot = os.environ.get("SONOSYNTH_REPORT_SCREENSHOT")
            if shot:
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
