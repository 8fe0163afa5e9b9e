"""End to end: the demo page in headless Chromium uploads a photo and shows the top-5 classes.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and PyPI ``selenium``
(the ``dev`` extra). The screenshot is saved under ``$PYTEST_ARTIFACTS`` or ``tests/artifacts/`` (gitignored).
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from slimformer.export import export_model, resolve_source

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("PYTEST_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and DRIVER),
                       reason="headless Chromium test needs Debian packages chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(search_run, tmp_path):
    import uvicorn

    from slimformer.export._serve import create_app

    export_model(resolve_source(search_run, supernet=search_run / "supernet.pt"), tmp_path / "m",
                 formats=("onnx",), measure=False)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "m" / "model.onnx"), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline or not t.is_alive():
            pytest.fail("the demo server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    t.join(timeout=10)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=900,800"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)  # a fixed path: Selenium Manager stays idle
    yield drv
    drv.quit()


def test_upload_photo_shows_top5(server, browser, tmp_path):
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    yy, xx = np.mgrid[0:96, 0:128]
    img = np.stack([xx * 2 % 256, yy * 2 % 256, (xx + yy) % 256], -1).astype(np.uint8)
    photo = tmp_path / "photo.png"
    Image.fromarray(img).save(photo)
    browser.get(server)
    assert "slimformer demo" in browser.title
    browser.find_element(By.ID, "file").send_keys(str(photo))
    browser.find_element(By.ID, "submit").click()
    rows = WebDriverWait(browser, 30).until(
        EC.presence_of_all_elements_located((By.CSS_SELECTOR, "#results tbody tr.prediction")))
    assert len(rows) == 5
    labels = [r.find_element(By.CLASS_NAME, "label").text for r in rows]
    assert all(lbl.startswith("thing") for lbl in labels)
    assert "Inference:" in browser.find_element(By.ID, "timing").text
    assert browser.find_element(By.ID, "error").text == ""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve_upload.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000

    # a non-image upload shows the server's message on the page, not a crash
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "error"), "not a readable image"))
    assert not browser.find_element(By.ID, "results").is_displayed()
