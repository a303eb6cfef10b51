"""End to end in a real browser: `python -m deco.app` on a deco checkpoint and a llava-hf directory, driven by
headless Chromium (Debian's chromium + chromium-driver, selenium). Every wait is bounded.

Skipped when chromium / chromedriver / selenium are missing, unless DECO_REQUIRE_BROWSER=1 (set by .ci/run,
which installs them): then their absence fails. DECO_APP_SCREENSHOT=<path> keeps a copy of the screenshot.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_helpers import deco_ckpt, llava_hf_dir
from PIL import Image

from deco.data.shapes import render_scene

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("DECO_REQUIRE_BROWSER") == "1"


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[app]')"
    if not (CHROMIUM and DRIVER):
        return "chromium / chromedriver not found (apt-get install chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, every: float = 0.5):
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # element not there yet, server not up yet
            value = None
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def server(tmp_path):
    missing = _browser_missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"DECO_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    port = _free_port()
    log = open(tmp_path / "app.log", "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deco.app", f"ckpt=[{deco_ckpt()},{llava_hf_dir()}]", f"port={port}",
         "max_new_tokens=6", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait("the app to serve its page", lambda: proc.poll() is None and urllib.request.urlopen(url, timeout=5).status == 200
              or proc.poll() is not None and pytest.fail((tmp_path / "app.log").read_text()[-3000:]), 240)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1700,2600", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    try:
        driver.get(server)
        yield driver
    finally:
        driver.quit()


def _img(driver, elem_id: str):
    from selenium.webdriver.common.by import By

    img = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} img")
    loaded = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    return img.get_attribute("src") if loaded else None


def _pixels(src: str) -> bytes:
    with urllib.request.urlopen(src, timeout=30) as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB").tobytes()


def test_upload_ask_select_in_chromium(browser, tmp_path):
    shot = tmp_path / "app.png"
    try:
        _explore(browser, tmp_path)
    finally:  # also on failure: the page as it was is the best clue
        browser.save_screenshot(str(shot))
        if os.environ.get("DECO_APP_SCREENSHOT"):
            shutil.copy(shot, os.environ["DECO_APP_SCREENSHOT"])
    with Image.open(shot) as picture:
        assert picture.size[0] >= 1000


def _explore(browser, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "photo.png"
    render_scene(1000, 3).image.resize((320, 200)).save(image)  # not square: padded as each model was trained
    _wait("the upload field", lambda: browser.find_elements(By.CSS_SELECTOR, "#image-input input[type=file]"), 60)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a picture")
    browser.find_element(By.CSS_SELECTOR, "#image-input input[type=file]").send_keys(str(bad))
    _wait("the broken upload to arrive", lambda: browser.find_elements(By.CSS_SELECTOR, "#image-input img"), 60)
    browser.find_element(By.CSS_SELECTOR, "button#ask").click()
    _wait("the unreadable-image message", lambda: "Could not read 'broken.png' as an image"
          in browser.find_element(By.ID, "status").text, 120)
    browser.find_element(By.CSS_SELECTOR, "#image-input button[aria-label='Remove Image']").click()
    _wait("the broken upload to go", lambda: not browser.find_elements(By.CSS_SELECTOR, "#image-input img"), 30)
    browser.find_element(By.CSS_SELECTOR, "#image-input input[type=file]").send_keys(str(image))
    _wait("the uploaded image preview", lambda: browser.find_elements(By.CSS_SELECTOR, "#image-input img"), 60)
    question = browser.find_element(By.CSS_SELECTOR, "#question textarea")
    question.clear()
    question.send_keys("What shape is green?")
    vision = [e for e in browser.find_elements(By.CSS_SELECTOR, "#vision label") if "input patches" in e.text]
    assert len(vision) == 1
    vision[0].click()  # relevance through the vision tower
    browser.find_element(By.CSS_SELECTOR, "button#ask").click()

    def answers():
        values = [browser.find_element(By.CSS_SELECTOR, f"#m{i}-answer textarea").get_attribute("value") for i in (0, 1)]
        return values if all(values) else None

    got = _wait("both models' answers", answers, 300)
    t2i = [_wait(f"model {i}'s R_t2i", lambda i=i: _img(browser, f"m{i}-t2i"), 60) for i in (0, 1)]
    for i in (0, 1):
        for elem in ("t2q", "q2i", "word-img"):
            _wait(f"model {i}'s {elem}", lambda i=i, elem=elem: _img(browser, f"m{i}-{elem}"), 60)
    assert "Image 320x200; 2 model(s)" in browser.find_element(By.ID, "status").text
    assert "24x24 input patches (through the ViT)" in browser.find_element(By.ID, "m0-info").text
    assert "4x4 input patches" in browser.find_element(By.ID, "m1-info").text

    # select the answer's last word: its R_t2i replaces the first word's
    word_before = _img(browser, "m0-word-img")
    words = browser.find_elements(By.CSS_SELECTOR, "#m0-word label")
    assert len(words) >= 2, f"answer {got[0]!r} has fewer than two words to choose from"
    words[-1].click()
    word_after = _wait("the selected word's map", lambda: (s := _img(browser, "m0-word-img")) != word_before and s, 60)
    assert _pixels(word_after) != _pixels(word_before)

    # select a query token in the dropdown: its R_q2i replaces the top query's
    q2i_before = _img(browser, "m0-q2i")
    browser.find_element(By.CSS_SELECTOR, "#m0-query input").click()
    options = _wait("the query list", lambda: browser.find_elements(By.CSS_SELECTOR, "#m0-query li[role=option]"), 30)
    options[3].click()
    q2i_after = _wait("the selected query's map", lambda: (s := _img(browser, "m0-q2i")) != q2i_before and s, 60)
    assert _pixels(q2i_after) != _pixels(q2i_before)
    assert len(_pixels(t2i[0])) == 336 * (336 + 30) * 3 and _pixels(t2i[0]) != _pixels(t2i[1])  # + the colour bar strip

