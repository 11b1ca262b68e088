"""The chat page at `/` in a real browser (headless Chromium via selenium): it streams a reply, keeps the
conversation across turns and shows tokens/s. Skips with a clear message where Chromium or its driver is missing
(CI installs `chromium chromium-driver` with apt-get)."""
from __future__ import annotations

import os
import shutil
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("sse_starlette")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install '.[dev]')")

from server_proc import Server  # noqa: E402


def _chromium() -> tuple[str, str]:
    browser = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                shutil.which("google-chrome")) if p), None)
    driver = shutil.which("chromedriver") or ("/usr/lib/chromium/chromedriver"
                                              if os.path.exists("/usr/lib/chromium/chromedriver") else None)
    if not browser or not driver:
        pytest.skip("headless Chromium test skipped: needs chromium and chromedriver "
                    "(apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    path, driver = _chromium()
    opts = Options()
    opts.binary_location = path
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
              "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(a)
    try:
        b = webdriver.Chrome(service=Service(driver), options=opts)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start here: skip, saying why
        pytest.skip(f"headless Chromium could not start: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    yield b
    b.quit()


@pytest.fixture(scope="module")
def server(tiny_gqa):
    s = Server(tiny_gqa[1], "--ctx", "256")
    yield s
    s.stop()


def _wait(pred, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the page")


def test_chat_page_answers_and_keeps_the_conversation(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server.base + "/")
    assert "MAQ chat" in browser.title
    _wait(lambda: browser.find_element(By.ID, "model").text == "gqa.f32.gguf")
    browser.execute_script("document.getElementById('maxtok').value = '12'")   # inside the closed settings
    for turn, question in enumerate(["What is the capital of France?", "And of Italy?"]):
        box = browser.find_element(By.ID, "input")
        box.send_keys(question)
        browser.find_element(By.ID, "send").click()
        _wait(lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                       if e.get_attribute("data-done") == "1"][turn:])
        replies = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        assert len(replies) == turn + 1 and replies[-1].text.strip()
        assert "tokens/s" in browser.find_element(By.ID, "stats").text
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error")
    users = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".msg.user")]
    assert users == ["What is the capital of France?", "And of Italy?"]
    # the second turn was sent with the whole conversation: its prompt re-used the first turn's cache
    stats = browser.find_element(By.ID, "stats").text
    assert "cached" in stats and " 0 cached" not in stats
