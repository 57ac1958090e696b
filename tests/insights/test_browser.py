"""The page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver`` packages, installed by ``.ci/run``) driven by selenium.

Selenium Manager is kept offline (``SE_OFFLINE``) and given the driver and the
browser explicitly, so nothing is downloaded. The screenshot is kept in
``artifacts/insights.png`` (git-ignored) and in pytest's ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import png_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(
                f"{path} is missing: apt-get install chromium chromium-driver "
                "(.ci/run does it)"
            )
    old_offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1250",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        if old_offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = old_offline


def _images_loaded(driver, selector: str) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".filter(i => i.complete && i.naturalWidth > 0).length",
        selector,
    )


def test_pick_image_explain_two_methods_in_chromium(browser, live, tmp_path):
    d = browser
    wait = WebDriverWait(d, 60, poll_frequency=0.1)
    d.get(live + "/")
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready"))
    samples = d.find_elements(By.CSS_SELECTOR, "#samples img.sample")
    assert len(samples) == 6
    wait.until(lambda d: _images_loaded(d, "#samples img.sample") == 6)

    # pick an image: predictions appear, the top one is the target
    samples[3].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#predictions tbody tr"))
    rows = d.find_elements(By.CSS_SELECTOR, "#predictions tbody tr")
    assert len(rows) == 5
    assert "target" in rows[0].get_attribute("class")
    assert "class 3" in d.find_element(By.ID, "true-label").text

    # the fast methods are ticked when the page opens, never ATMAN or flow
    ticked = [
        cb.get_attribute("value")
        for cb in d.find_elements(
            By.CSS_SELECTOR, "#methods .method > input[type=checkbox]"
        )
        if cb.is_selected()
    ]
    assert ticked == ["grad_sam", "rollout"]
    # integer fields carry their bounds
    steps = d.find_element(By.ID, "param-tam-steps")
    assert (steps.get_attribute("min"), steps.get_attribute("max")) == ("1", "100")
    status = d.find_element(By.ID, "status").text
    assert status == "sample 3 (class 3): ready", status

    # choose exactly two methods, one with a parameter, and a target class
    for cb in d.find_elements(
        By.CSS_SELECTOR, "#methods .method > input[type=checkbox]"
    ):
        if cb.is_selected():
            cb.click()
    d.find_element(By.ID, "method-rollout").click()
    d.find_element(By.ID, "method-raw_attention").click()
    d.execute_script(
        "document.getElementById('param-raw_attention-head').value = '1';"
        "const t = document.getElementById('target-select');"
        "t.value = '2'; t.dispatchEvent(new Event('change'));"
    )
    wait.until(
        lambda d: not d.find_element(By.ID, "explain-btn").get_attribute("disabled")
    )
    d.find_element(By.ID, "explain-btn").click()
    wait.until(lambda d: _images_loaded(d, "#overlays figure.overlay img") == 2)
    figures = d.find_elements(By.CSS_SELECTOR, "#overlays figure.overlay")
    by_method = {f.get_attribute("data-method"): f for f in figures}
    assert sorted(by_method) == ["raw_attention", "rollout"]
    assert "head=1" in by_method["raw_attention"].text
    for img in d.find_elements(By.CSS_SELECTOR, "#overlays figure.overlay img"):
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert img.size["width"] >= 200
    assert 'class "class 2"' in d.find_element(By.ID, "status").text

    # attention heads of the last layer
    d.find_element(By.ID, "attention-btn").click()
    wait.until(lambda d: _images_loaded(d, "#heads figure img") == 3)  # 2 heads + mean

    # scores, computed as a job, with a progress bar
    d.find_element(By.ID, "n-steps").clear()
    d.find_element(By.ID, "n-steps").send_keys("4")
    d.find_element(By.ID, "scores-btn").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scores-table tbody tr"))
    assert len(d.find_elements(By.CSS_SELECTOR, "#scores-table tbody tr")) == 2
    assert d.find_element(By.ID, "job-progress").get_attribute("value") == "1"
    assert (
        d.find_element(By.ID, "job-message").text == "finished (10/10 steps)"
    )  # 2 x (1 + 4)
    assert not d.find_element(By.ID, "job").get_attribute("hidden")

    d.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "insights.png"
    assert d.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "insights.png")
    assert shot.stat().st_size > 10_000

    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_upload_in_chromium(browser, live, tmp_path):
    d = browser
    wait = WebDriverWait(d, 60, poll_frequency=0.1)
    d.get(live + "/")
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready"))
    good = tmp_path / "upload.png"
    good.write_bytes(png_bytes(48, 40, (20, 200, 60)))
    d.find_element(By.ID, "upload-input").send_keys(str(good))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#predictions tbody tr"))
    wait.until(lambda d: _images_loaded(d, "#selected-image") == 1)
    assert "/api/images/u" in d.find_element(By.ID, "selected-image").get_attribute(
        "src"
    )
    # the status line names the file, not the server's internal id
    wait.until(lambda d: "ready" in d.find_element(By.ID, "status").text)
    status = d.find_element(By.ID, "status").text
    assert status == 'uploaded image "upload.png": ready', status
    # a corrupt file: the page shows the server's message, nothing breaks
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    d.find_element(By.ID, "upload-input").send_keys(str(bad))
    wait.until(lambda d: "upload refused" in d.find_element(By.ID, "status").text)
    assert "not a valid image" in d.find_element(By.ID, "status").text
