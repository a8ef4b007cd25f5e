"""Real headless Chromium against a real server: what a person does in the browser."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.factories import make_docx

pytestmark = pytest.mark.browser


def test_upload_two_files_and_watch_both_reach_indexed(
    browser_driver, live_server: str, tmp_path: Path
):
    driver = browser_driver
    collection = f"browser-{uuid.uuid4().hex[:8]}"
    first = tmp_path / "handbook.docx"
    first.write_bytes(make_docx("Handbook", ["Holidays are booked two weeks ahead."]))
    second = tmp_path / "faq.md"
    second.write_text("# FAQ\n\nThe office opens at nine.\n")

    driver.get(f"{live_server}/documents")
    box = driver.find_element(By.NAME, "name")
    box.send_keys(collection)
    box.submit()
    wait = WebDriverWait(driver, 60)
    wait.until(ec.url_contains(f"collection={collection}"))
    assert Select(driver.find_element(By.ID, "collection")).first_selected_option.text == collection

    driver.find_element(By.ID, "file-input").send_keys(f"{first}\n{second}")
    wait.until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#document-rows tr[data-status]")) == 2
    )
    wait.until(
        lambda d: all(
            row.get_attribute("data-status") == "indexed"
            for row in d.find_elements(By.CSS_SELECTOR, "#document-rows tr[data-status]")
        )
    )
    rows = driver.find_elements(By.CSS_SELECTOR, "#document-rows tr[data-status]")
    names = sorted(r.find_element(By.CSS_SELECTOR, ".filename a").text for r in rows)
    assert names == ["faq.md", "handbook.docx"]
    assert all(r.find_element(By.CSS_SELECTOR, ".status").text == "indexed" for r in rows)

    driver.refresh()  # the rows are stored, not just drawn
    wait.until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#document-rows tr[data-status]")) == 2
    )
