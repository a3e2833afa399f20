"""The demo in a real headless Chromium (Debian's ``chromium`` package, driven by the ``playwright`` python
package; no browser is downloaded): the page loads, a SynthGym example is clicked, the prediction panel
fills with the example's element and the sampled frames, the chat streams an answer, the quiz shows the
truth; a full-page screenshot is saved to ``test-artifacts/demo.png``.

Skipped, with the reason, when Chromium is not installed (``apt-get install -y chromium``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from demo_fixtures import running_demo

from mllm.chat import VideoChat
from mllm.demo_handlers import display_names

pytest_plugins = ["demo_fixtures", "mllm_run_fixtures", "tiny_llm_fixtures"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 30_000

if not CHROMIUM.exists():
    reason = f"{CHROMIUM} not found: install Debian's browser with `apt-get install -y chromium`"
    print(f"test_demo_browser: skipped: {reason}")
    pytest.skip(reason, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory, fitted_encoder, synthgym_clips, trained_mllm, mllm_data):
    chat = VideoChat.from_pretrained(trained_mllm, encoder_weights=mllm_data["encoder"])
    with running_demo(
        tmp_path_factory.mktemp("demo_browser"), fitted_encoder, synthgym_clips["list"], chat
    ) as s:
        yield s


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def test_example_click_fills_the_prediction_panel(server, page):
    expect = sync_api.expect
    page.goto(server.url, wait_until="load", timeout=TIMEOUT_MS)
    expect(page.get_by_text("SeFAR: fine-grained gymnastics elements")).to_be_visible(timeout=TIMEOUT_MS)

    example = next(e for e in server.examples if e.label is not None and e.title.endswith("floor exercise"))
    name = display_names(server.predictor)[example.label]
    page.get_by_text(example.title, exact=True).click()
    expect(page.locator("#top5")).to_contain_text(name, timeout=TIMEOUT_MS)
    expect(page.locator("#top5-table")).to_contain_text("floor exercise", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("top-1 correct", timeout=TIMEOUT_MS)
    frames = page.locator("#frames img")
    expect(frames).to_have_count(8, timeout=TIMEOUT_MS)
    page.wait_for_function(  # every thumbnail decoded, not just present
        "() => [...document.querySelectorAll('#frames img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=TIMEOUT_MS,
    )

    page.get_by_placeholder("e.g. What gymnastics move is this athlete performing?").fill(
        "What gymnastics move is this athlete performing?"
    )
    page.keyboard.press("Enter")
    expect(page.locator("#chatbot")).to_contain_text("What gymnastics move", timeout=TIMEOUT_MS)
    bot = page.locator("#chatbot .bot, #chatbot [data-testid='bot']")
    expect(bot.last).not_to_be_empty(timeout=TIMEOUT_MS)

    page.get_by_role("button", name="Quiz me on this clip").click()
    expect(page.locator("#quiz")).to_contain_text("Truth:", timeout=TIMEOUT_MS)
    expect(page.locator("#quiz")).to_contain_text("MLLM answer:", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)  # let the last streamed update and transitions settle for the screenshot
    assert page.locator(".toast-body.error").count() == 0  # no error toast

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_an_invalid_upload_shows_one_message(server, page, tmp_path):
    bad = tmp_path / "notes.mp4"  # named like a video, holds text
    bad.write_text("this is not a video\n" * 20)
    page.goto(server.url, wait_until="load", timeout=TIMEOUT_MS)
    page.locator("input[type=file]").first.set_input_files(str(bad))
    message = "This file is not a video clip"
    sync_api.expect(page.locator("#status")).to_contain_text(message, timeout=2 * TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the browser's own player has tried the file by now
    assert page.get_by_text(message).count() == 1
    # no "Error" badge on the outputs or the upload, and no error toast (gradio's, or the player's
    # "Video not playable")
    assert page.locator(".error").count() == 0 and page.locator(".toast-body").count() == 0
