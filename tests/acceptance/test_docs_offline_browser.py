"""``/docs`` and ``/redoc`` render in a real browser with no way out to the internet: their
scripts and styles come from the package, not a CDN (headless Chromium, every host name but
the loopback address made unresolvable)."""

from __future__ import annotations

import pytest

from tests.acceptance.test_agent_page_browser import CHROMEDRIVER, CHROMIUM
from tests.conftest import require_service
from tests.servers.web_app import WAIT

TITLE = "comms-pipeline Web API"


@pytest.fixture
def offline_browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        require_service(False, f"selenium ({exc})")
    require_service(bool(CHROMIUM and CHROMEDRIVER),
                    "Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
                 # No network but the loopback: a CDN's host name does not resolve.
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def _resources(browser) -> list[str]:  # type: ignore[no-untyped-def]
    """What the page loaded to work: scripts, styles, API calls (not images: ReDoc's footer
    links its maker's logo, which simply does not show offline)."""
    return browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.initiatorType !== 'img').map(e => e.name)")


def test_swagger_ui_and_redoc_render_offline(served, offline_browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = served
    browser, wait = offline_browser, WebDriverWait(offline_browser, WAIT)
    browser.get(f"{base}/docs")
    wait.until(lambda d: TITLE in " ".join(
        e.text for e in d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title")))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20)
    assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")
    loaded = _resources(browser)
    assert any(url.endswith("/docs-assets/swagger-ui-bundle.js") for url in loaded)
    assert all(url.startswith(base) for url in loaded), loaded

    browser.get(f"{base}/redoc")
    wait.until(lambda d: any(TITLE in e.text for e in d.find_elements(By.TAG_NAME, "h1")))
    wait.until(lambda d: "Trigger a communication" in d.find_element(By.TAG_NAME, "body").text)
    loaded = _resources(browser)
    assert any(url.endswith("/docs-assets/redoc.standalone.js") for url in loaded)
    assert all(url.startswith(base) for url in loaded), loaded
