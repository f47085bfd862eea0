"""End to end: the real Streamlit server started as users start it, Debian's headless Chromium (selenium), real uploads."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from app_server import start_server, stop

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "app", "streamlit_app.py")
ARTIFACTS = os.path.join(REPO, "test-artifacts")
pytestmark = pytest.mark.e2e
needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
    reason="Debian chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")


def listening_addresses(proc: subprocess.Popen, port: int) -> set:
    """IP addresses that ``proc`` or its children listen on at ``port``."""
    procs = [psutil.Process(proc.pid)]
    procs += procs[0].children(recursive=True)
    found = set()
    for p in procs:
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                found.add(c.laddr.ip)
    return found


def test_the_documented_streamlit_command_listens_on_this_machine_only():
    """Issue: `streamlit run app/streamlit_app.py` as documented listened on every interface. The app's docstring
    now gives the command to use; run exactly that command."""
    doc = open(APP).read().split('"""')[1]
    found = re.search(r"(streamlit run app/streamlit_app\.py(?: --[\w.]+ [^\s`]+)*)", doc)
    assert found, doc
    args = found.group(1).split()[2:] + ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    server, port = start_server(lambda port: [sys.executable, "-m", "streamlit", "run", *args, "--server.port",
                                              str(port)], cwd=REPO)
    try:
        assert listening_addresses(server, port) == {"127.0.0.1"}
    finally:
        stop(server)


@needs_chromium
def test_cli_app_listens_locally_and_renders_two_uploads_with_one_name_and_a_cue_in_a_real_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**os.environ, "GATTA_VIZ_FILES": ""}
    server, port = start_server(lambda port: [sys.executable, "-m", "gatta_viz.cli", "app", "--port", str(port)],
                                cwd=REPO, env=env)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    twins = tempfile.mkdtemp(prefix="gv-twins-")
    driver = None
    try:
        assert listening_addresses(server, port) == {"127.0.0.1"}  # `gatta-viz app` binds 127.0.0.1 by default
        # two different images, both called shirt.png
        uploads = []
        for i, src in enumerate(["trouser_test00002.png", "ankle-boot_test00000.png"]):
            os.makedirs(os.path.join(twins, str(i)))
            uploads.append(shutil.copy(os.path.join(REPO, "sample_images", "fashion-mnist", src),
                                       os.path.join(twins, str(i), "shirt.png")))
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,2200", f"--user-data-dir={profile}"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        # Streamlit replaces elements while it reruns: a caption read mid-rerun is stale, so look again
        wait = WebDriverWait(driver, 90, ignored_exceptions=(StaleElementReferenceException,))
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stFileUploader'] input[type=file]")))
        upload.send_keys("\n".join(uploads))

        def map_captions(d):
            return [c.text for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")
                    if c.text.startswith("alpha x agreement layer")]

        wait.until(lambda d: len(map_captions(d)) == 6)
        assert [c.split(",")[0] for c in map_captions(driver)] == [f"alpha x agreement layer{i}" for i in (1, 2, 3)] * 2
        body = driver.find_element(By.TAG_NAME, "body").text
        assert body.count("Pass 2 (model output)") == 2 and "Trouser" in body and "Ankle boot" in body
        assert "Download raw maps (.npz)" in body and "DuplicateElementKey" not in body
        assert driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']") == []
        # a top-down cue (the bundled model stores one query per class): each image gets a second row of maps
        cue_box = next(b for b in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSelectbox']")
                       if "Top-down cue" in b.text)
        field = cue_box.find_element(By.CSS_SELECTOR, "input")
        field.click()
        field.send_keys("Trouser")
        field.send_keys(Keys.ENTER)

        def cued_captions(d):
            return [c.text for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stImageCaption']")
                    if c.text.startswith("cued: Trouser")]

        wait.until(lambda d: len(cued_captions(d)) == 6)
        assert [c.split(",")[0] for c in cued_captions(driver)] == \
            [f"cued: Trouser · alpha x agreement layer{i}" for i in (1, 2, 3)] * 2
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").text.count("Pass 2 cued: Trouser") == 2)
        assert len(map_captions(driver)) == 6  # the maps without the cue stay
        assert driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']") == []
        time.sleep(1)  # let images finish painting for the screenshot
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, "app_e2e.png"))
    finally:
        if driver is not None:
            driver.quit()
        stop(server)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(twins, ignore_errors=True)
