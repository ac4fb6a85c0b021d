"""The attention viewer in a real browser: Debian's chromium driven headless by selenium.

Skipped, with the reason shown, where selenium, chromium or chromedriver is missing (CI installs
them; see .ci/run). Checks: no console errors; the heads and tokens in the DOM; choosing a layer,
a head, a view and a group changes the canvas; a 512-token, 12-layer, 12-head page draws within
one second (timed in the page, from its script's start to the rasterised first drawing).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch

from attnkit.viz.html import write
from attnkit.viz.payload import Group

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1200,900"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not CHROMIUM or not DRIVER:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _groups(t: int, layers: int, heads: int, seed: int = 0) -> list[Group]:
    g = torch.Generator().manual_seed(seed)
    tokens = [f"t{i}" for i in range(t)]
    ws = [torch.softmax(torch.randn(heads, t, t, generator=g) * 3, dim=-1) for _ in range(layers)]
    return [Group("self", ws, tokens, tokens)]


def _open(driver, path: Path) -> dict:
    driver.get(path.as_uri())
    return _wait(driver, lambda d: d.get("ready") == "1")


def _state(driver) -> dict:
    return driver.execute_script("return Object.assign({}, document.getElementById('attnkit-viewer').dataset)")


def _wait(driver, ok, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = _state(driver)
        if ok(s):
            return s
        time.sleep(0.05)
    raise AssertionError(f"the page did not get there: {_state(driver)}")


def _canvas_hash(driver) -> str:
    data = driver.execute_script("const c = document.getElementById('ak-canvas'); return c.toDataURL('image/png');")
    return hashlib.sha256(data.encode()).hexdigest()


def _act(driver, script: str) -> dict:
    before = int(_state(driver)["draws"])
    driver.execute_script(script)
    return _wait(driver, lambda s: int(s["draws"]) > before)


def _errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_viewer_draws_and_reacts(browser, tmp_path) -> None:

    groups = _groups(20, 3, 4) + [Group("cross", [torch.softmax(torch.randn(4, 7, 20), -1)] * 3, [f"d{i}" for i in range(7)],
                                        [f"t{i}" for i in range(20)])]
    page = write(tmp_path / "small.html", groups)
    s = _open(browser, page)
    assert (s["nHeads"], s["nTokens"], s["nLayers"], s["view"], s["heads"]) == ("4", "20", "3", "head", "0,1,2,3")
    count = "return document.querySelectorAll(arguments[0]).length"
    assert browser.execute_script(count, ".head-toggle") == 4
    assert browser.execute_script(count, "#ak-tokens li") == 20
    hashes = {_canvas_hash(browser)}

    s = _act(browser, "const l = document.getElementById('ak-layer'); l.value = '2'; l.dispatchEvent(new Event('change'));")
    assert s["layer"] == "2"
    hashes.add(_canvas_hash(browser))
    s = _act(browser, "document.querySelector('.head-toggle[data-head=\"1\"]').click();")
    assert s["heads"] == "0,2,3"
    hashes.add(_canvas_hash(browser))
    for view in ("model", "matrix"):
        s = _act(browser, f"document.querySelector('nav button[data-view=\"{view}\"]').click();")
        assert s["view"] == view
        hashes.add(_canvas_hash(browser))
    assert len(hashes) == 5, "every choice must change what is drawn"
    s = _act(browser, "const g = document.getElementById('ak-group'); g.value = '1'; g.dispatchEvent(new Event('change'));")
    assert (s["group"], s["nTokens"], s["nKeys"]) == ("cross", "7", "20")
    assert browser.execute_script(count, "#ak-tokens li") == 7
    browser.save_screenshot(str(tmp_path / "viewer.png"))
    assert (tmp_path / "viewer.png").stat().st_size > 0
    assert _errors(browser) == []


def test_512_tokens_12_layers_12_heads_draw_within_one_second(browser, tmp_path) -> None:
    page = write(tmp_path / "long.html", _groups(512, 12, 12))
    s = _open(browser, page)
    assert (s["nTokens"], s["nLayers"], s["nHeads"]) == ("512", "12", "12")
    assert float(s["firstDrawMs"]) < 1000, f"first drawing took {s['firstDrawMs']} ms"
    for view in ("model", "matrix"):
        s = _act(browser, f"document.querySelector('nav button[data-view=\"{view}\"]').click();")
        assert float(s["lastDrawMs"]) < 1000, f"{view} view took {s['lastDrawMs']} ms"
    browser.save_screenshot(str(tmp_path / "long.png"))
    assert _errors(browser) == []
