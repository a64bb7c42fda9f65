"""The agent page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromedriver``) driven by Selenium against the API served by uvicorn on a loopback port
(the ``served`` fixture of ``tests/servers/web_app.py``).

An agent signs in with an API key (kept in sessionStorage, sent as a header), lists a
contact's communications, and opens the stored email and the stored letter.
"""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import insert

from comms_pipeline.store.models import headers_t
from tests.conftest import require_service
from tests.integration.documents_factory import add_entries, make_pdf
from tests.integration.web_support import external_entries, role_key
from tests.servers.web_app import WAIT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
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
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def _seed(engine):  # type: ignore[no-untyped-def]
    html = ("<html><body><p>Dear Maria, your March bill is <b>42.00 EUR</b>.</p>"
            '<img src="http://127.0.0.1:8000/t/o/abc.gif" width="1" height="1"></body></html>')

    def eml(i, to):  # type: ignore[no-untyped-def]
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "Billing <bills@example.com>", to, "March bill"
        msg.set_content("Dear Maria, your March bill is 42.00 EUR.")
        msg.add_alternative(html, subtype="html")
        return msg.as_bytes()

    [email] = add_entries(engine, "email", 1, contact_ref="C-1001", content=eml,
                          state="completed")
    pdf = make_pdf(2)
    [letter] = add_entries(engine, "letter", 1, contact_ref="C-1001",
                           content=lambda i, to: pdf)
    [rejected] = external_entries(engine, None, 1, contact_ref="C-1001", media="sms",
                                  state="rejected", error_code="88",
                                  error_description="Throttling error")
    return email, letter, rejected, pdf


def test_an_agent_lists_a_contacts_communications_and_opens_them(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, engine = served
    email, letter, rejected, pdf = _seed(engine)
    with engine.begin() as conn:
        offer = conn.execute(insert(headers_t).values(
            contact_ref="C-1001", template_code="MONTHLY_OFFER", status="opted_out",
            status_code="OPTED_OUT", status_reason="the contact has not opted in to direct "
            "marketing").returning(headers_t.c.id)).scalar_one()
    key = role_key(engine, "agent", "Anna Agent")
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{base}/agent")

    # A wrong key is refused with the API's message.
    browser.find_element(By.ID, "api-key").send_keys("cp_000000000000_nope")
    browser.find_element(By.ID, "login").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "unknown API key"))

    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "login").click()
    wait.until(ec.visibility_of_element_located((By.ID, "main-section")))
    assert "Anna Agent (agent)" in browser.find_element(By.ID, "who").text
    assert browser.execute_script("return sessionStorage.getItem('comms.apiKey')") == key
    assert key not in browser.current_url

    browser.find_element(By.ID, "contact-ref").send_keys("C-1001")
    browser.find_element(By.ID, "search").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#communications tbody tr")) == 3)
    rows = {int(r.get_attribute("data-id")): r.text
            for r in browser.find_elements(By.CSS_SELECTOR, "#communications tbody tr")}
    assert "Completed" in rows[email] and "Pending" in rows[letter]
    assert "Rejected" in rows[rejected] and "88: Throttling error" in rows[rejected]
    assert "Contact C-1001" in browser.find_element(By.ID, "contact-name").text
    # Beside them, what was not sent and why: the opted-out offer and the rejected SMS.
    wait.until(lambda d: d.find_element(By.ID, "not-sent").is_displayed())
    unsent = {r.get_attribute("data-request"): r.text
              for r in browser.find_elements(By.CSS_SELECTOR, "#not-sent tbody tr")}
    assert "OPTED_OUT" in unsent[str(offer)] and "has not opted in" in unsent[str(offer)]
    assert any("Throttling error" in text for text in unsent.values())

    # The stored email, with its HTML in a sandboxed frame and the open pixel removed.
    browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{email}'] .open-document").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "viewer-title"), "March bill"))
    assert "bills@example.com" in browser.find_element(By.ID, "viewer-headers").text
    assert "42.00 EUR" in browser.find_element(By.ID, "email-text").text
    frame = browser.find_element(By.ID, "email-html")
    assert frame.get_attribute("sandbox") == ""
    assert "/t/o/" not in frame.get_attribute("srcdoc")
    browser.switch_to.frame(frame)
    assert "your March bill is 42.00 EUR" in browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()

    # The stored letter, fetched with the key as a blob and shown from it.
    browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{letter}'] .open-document").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "viewer-title"), f"Letter {letter}"))
    download = browser.find_element(By.ID, "letter-download")
    assert f"({len(pdf)} bytes)" in download.text
    assert browser.find_element(By.ID, "letter-pdf").get_attribute("src").startswith("blob:")
    headers = browser.find_element(By.ID, "viewer-headers").text
    assert "application/pdf" in headers and f"{len(pdf)} bytes" in headers

    # Signed in for the tab's life; signing out forgets the key.
    browser.refresh()
    wait.until(ec.visibility_of_element_located((By.ID, "main-section")))
    browser.find_element(By.ID, "logout").click()
    wait.until(ec.visibility_of_element_located((By.ID, "login-section")))
    assert browser.execute_script("return sessionStorage.getItem('comms.apiKey')") is None


def test_the_page_names_an_unknown_contact(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, engine = served
    key = role_key(engine, "agent")
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{base}/agent")
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "login").click()
    wait.until(ec.visibility_of_element_located((By.ID, "main-section")))
    browser.find_element(By.ID, "contact-ref").send_keys("C-404")
    browser.find_element(By.ID, "search").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "no contact 'C-404'"))
    assert not browser.find_element(By.ID, "communications").is_displayed()
