"""End to end: the real Streamlit server, Debian's headless Chromium (selenium), a real upload."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from gatta_viz.cli.app import app_command

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(REPO, "test-artifacts")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                       reason="Debian chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def test_upload_in_real_browser_shows_overlays():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    env = {**os.environ, "GATTA_VIZ_FILES": ""}
    server = subprocess.Popen(app_command(port, "127.0.0.1"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    driver = None
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,2200", f"--user-data-dir={profile}"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        image = os.path.join(REPO, "sample_images", "fashion-mnist", "trouser_test00002.png")
        upload.send_keys(image)
        wait.until(lambda d: len([c for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")
                                  if c.text.startswith("agreement layer")]) == 3)
        caps = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")]
        assert [c.split(",")[0] for c in caps if c.startswith("agreement")] == ["agreement layer1", "agreement layer2", "agreement layer3"]
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Pass 2 (model output)" in body and "trouser_test00002.png" in body
        time.sleep(1)  # let images finish painting for the screenshot
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "app_e2e.png"))
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(profile, ignore_errors=True)
