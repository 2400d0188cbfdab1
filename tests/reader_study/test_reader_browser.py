"""A real browser (Debian's Chromium, driven by Playwright) reads with the keyboard, across a server restart."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sonosynth.reader_study.store import StudyStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (make test does)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` Python package is not installed")

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(study_dir: Path, port: int) -> Iterator[str]:
    """`sonosynth reader-study serve` in a subprocess, as a user would run it; yields its URL once it answers."""
    command = [sys.executable, "-m", "sonosynth", "reader-study", "serve", str(study_dir), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(f"{url}/api/study", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def shown_image_id(page) -> str:
    return page.locator("#image").get_attribute("src").rsplit("/", 1)[-1]


def test_keyboard_reading_survives_a_server_restart(study_dir, tmp_path):
    expect = sync_api.expect
    screenshots = Path(os.environ.get("SONOSYNTH_SCREENSHOT_DIR") or tmp_path)
    screenshots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    foreign_requests: list[str] = []
    pressed: dict[str, str] = {}

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1000, "height": 820})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("request", lambda request: None if request.url.startswith(f"http://127.0.0.1:{port}/")
                else foreign_requests.append(request.url))

        with server(study_dir, port) as url:
            page.goto(url)
            page.fill("#name", "Dr Reader")
            page.press("#name", "Enter")
            progress = page.locator("#progress")
            expect(progress).to_have_text("Image 1 of 13")
            # Confidence then answer, all from the keyboard; the next image appears only once the answer is saved.
            for step, keys in enumerate([["4", "s"], ["r"], ["2", "s"]]):
                image_id = shown_image_id(page)
                for key in keys:
                    page.keyboard.press(key)
                pressed[image_id] = "synthetic" if keys[-1] == "s" else "real"
                expect(progress).to_have_text(f"Image {step + 2} of 13")
            fourth = shown_image_id(page)
            page.keyboard.press("n")
            page.keyboard.type("smooth speckle")
            page.keyboard.press("Escape")
            page.keyboard.press("r")
            expect(progress).to_have_text("Image 5 of 13")
            # Back one image: the earlier answer and note are shown; revise it, and reading goes on at image 5.
            page.keyboard.press("b")
            expect(progress).to_have_text("Image 4 of 13")
            assert shown_image_id(page) == fourth
            expect(page.locator("#note")).to_have_value("smooth speckle")
            expect(page.locator("#real")).to_have_class("answer chosen")
            expect(page.locator("#revisit")).to_be_visible()
            page.keyboard.press("s")
            pressed[fourth] = "synthetic"
            expect(progress).to_have_text("Image 5 of 13")
            fifth = shown_image_id(page)
            expect(page.locator("#image")).to_have_js_property("complete", True)
            page.screenshot(path=str(screenshots / "reader-study-page.png"))

        # The server is gone; what the reader gave is on disk.
        answers = StudyStore(study_dir).answers().set_index("image_id")
        assert answers["answer"].to_dict() == pressed
        assert answers.loc[fourth, "note"] == "smooth speckle" and answers.loc[fourth, "revisions"] == 1
        assert set(answers["reader"]) == {"Dr Reader"}

        with server(study_dir, port):
            # Same browser: the page remembers the reader and resumes at the first unanswered image.
            page.reload()
            expect(progress).to_have_text("Image 5 of 13")
            assert shown_image_id(page) == fifth
            expect(page.locator("#status")).to_contain_text("resuming at image 5")
            page.keyboard.press("s")
            expect(progress).to_have_text("Image 6 of 13")
            sixth = shown_image_id(page)
            # Another browser with no memory of the reader: typing the same name does not open the reading...
            link = page.locator("#reader-link").text_content()
            assert re.fullmatch(rf"{re.escape(url.rstrip('/'))}/#reader=[0-9a-f]{{32}}", link), link
            fresh = browser.new_context().new_page()
            fresh.goto(page.url)
            fresh.fill("#name", "Dr Reader")
            fresh.press("#name", "Enter")
            expect(fresh.locator("#status")).to_contain_text("already started")
            expect(fresh.locator("#reading")).to_be_hidden()
            # ...the reader's personal link does, and leaves no token in the address bar.
            fresh.goto(link)
            expect(fresh.locator("#progress")).to_have_text("Image 6 of 13")
            assert shown_image_id(fresh) == sixth and "#reader=" not in fresh.url
        browser.close()

    answers = StudyStore(study_dir).answers()
    assert len(answers) == 5 and answers.set_index("image_id").loc[fifth, "answer"] == "synthetic"
    assert foreign_requests == []
    print(f"screenshot: {screenshots / 'reader-study-page.png'}")
    assert (screenshots / "reader-study-page.png").stat().st_size > 1000
