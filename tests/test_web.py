"""The web page of `zoo serve` (zoo/serve/pages.py) in a real headless browser: Debian's chromium
driven by selenium through chromium-driver (./dev test installs them as root). Search, sort by
top-1, open a card, copy a command, follow the link to a registered fine-tuning run's report; a
screenshot is saved. Plain HTTP checks of escaping and of the report route's limits too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_features import LENET, lenet_world, small_digits

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a short fine-tune, a server and a browser: about 40 s


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or shutil.which("chromium-driver")
    if not browser or not driver:
        msg = "Debian's chromium and chromium-driver are not installed (./dev test installs them as root)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + " -- CI=true, so this is an error, not a skip")
        pytest.skip(msg)
    return browser, driver


@pytest.fixture(scope="module")
def served(testdata: Path, tmp_path_factory: pytest.TempPathFactory):
    """`zoo serve --no-upstream` over a ZOO_HOME whose catalogue has an exported LeNet fine-tune."""
    import zoo
    from zoo.export import export

    tmp = tmp_path_factory.mktemp("web")
    with lenet_world(testdata, tmp) as w:
        data = small_digits(tmp / "digits", per_class=8, classes=3)
        run = zoo.finetune(LENET, data, tmp / "run", cut="ip1", epochs=1, workers=0, lr=0.01)
        export(run.run_dir, tmp / "exported", to="torch")
        zoo.register(tmp / "exported", "me/lenet-digits")
        env = {**w["env"], "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen(
            [sys.executable, "-m", "zoo.cli", "serve", "--port", "0", "--no-upstream", "--quiet"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = p.stdout.readline().strip()  # the first line is the URL
            assert url.startswith("http://127.0.0.1:"), (url, p.poll())
            import requests

            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if requests.get(url + "/api/health", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.1)
            yield {"url": url, "run": run.run_dir, "tmp": tmp}
        finally:
            p.terminate()
            p.wait(timeout=10)


def test_page_escapes_and_the_report_route_serves_only_report_files(served) -> None:
    import requests

    url = served["url"]
    r = requests.get(url + "/", params={"q": "<script>alert(1)</script>"}, timeout=10)
    assert r.status_code == 200 and "<script>alert(1)</script>" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    r = requests.get(url + "/", params={"min_top1": "lots"}, timeout=10)
    assert r.status_code == 200 and 'id="error"' in r.text and "min_top1" in r.text
    assert requests.get(url + "/models/nobody/nothing", timeout=10).status_code == 404
    ok = requests.get(url + "/runs/me/lenet-digits/report.html", timeout=10)
    assert ok.status_code == 200 and ok.text == (served["run"] / "report.html").read_text()
    for bad in ("config.json", "model.safetensors", "..%2fconfig.json"):
        assert requests.get(url + f"/runs/me/lenet-digits/{bad}", timeout=10).status_code in (400, 404), bad
    assert requests.get(url + "/runs/keras/vgg16/report.html", timeout=10).status_code == 404


def test_search_sort_open_copy_and_follow_in_a_real_browser(served, monkeypatch) -> None:
    browser, driver_path = _chromium()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # selenium talks to chromedriver on localhost
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
    ):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_path), options=opts)
    url = served["url"]
    try:
        d.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        wait = WebDriverWait(d, 20)
        # search from the box
        d.get(url + "/")
        box = d.find_element(By.NAME, "q")
        box.send_keys("resnet")
        d.find_element(By.CSS_SELECTOR, "form.search button").click()
        wait.until(ec.url_contains("q=resnet"))
        rows = d.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert len(rows) >= 10
        assert all("resnet" in r.text.lower() for r in rows)

        # sort by top-1: the column's values in descending order, unknown ones last
        d.find_element(By.CSS_SELECTOR, "th[data-key=top1]").click()
        values = [
            c.get_attribute("data-value")
            for c in d.find_elements(By.CSS_SELECTOR, "#results tbody td:nth-child(4)")
        ]
        known = [float(v) for v in values if v]
        assert len(known) >= 5 and known == sorted(known, reverse=True)
        assert values[: len(known)] == [v for v in values if v]  # the empty ones after
        d.find_element(By.CSS_SELECTOR, "th[data-key=top1]").click()  # again: ascending
        again = [
            float(c.get_attribute("data-value"))
            for c in d.find_elements(By.CSS_SELECTOR, "#results tbody td:nth-child(4)")
            if c.get_attribute("data-value")
        ]
        assert again == sorted(known)

        # open a card from the results
        first = d.find_element(By.CSS_SELECTOR, "#results tbody tr td a")
        model_id = first.text
        first.click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "model-id"), model_id))
        import zoo

        card = zoo.info(model_id)
        shas = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#files td.sha")]
        assert shas == [
            f.checksum.value if f.checksum and f.checksum.value else "pinned on first use" for f in card.files
        ]

        # copy the pull command
        button = d.find_element(By.CSS_SELECTOR, "button.copy")
        want = button.get_attribute("data-text")
        assert want == f"zoo pull {model_id}"
        button.click()
        wait.until(lambda drv: button.text == "copied")
        got = d.execute_async_script(
            "var done = arguments[0];"
            "navigator.clipboard.readText().then(done, function (e) { done('ERR ' + e); });"
        )
        assert got == want

        # the registered fine-tune links its run's report
        d.get(url + "/models/me/lenet-digits")
        link = d.find_element(By.ID, "report-link")
        link.click()
        wait.until(ec.url_contains("/runs/me/lenet-digits/report.html"))
        imgs = d.find_elements(By.TAG_NAME, "img")
        assert imgs and all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        shot = served["tmp"] / "web.png"
        d.get(url + "/?q=vgg16")
        assert d.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 10_000
    finally:
        d.quit()
