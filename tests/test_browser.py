"""Real headless Chromium against a real server: what a person does in the browser."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.main import create_app
from tests.factories import make_docx
from tests.helpers import serving

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


def test_ask_see_the_answer_stream_and_open_a_citation(browser_driver, llm_settings, facts):
    driver = browser_driver
    with serving(create_app(llm_settings)) as url:
        driver.get(f"{url}/")
        Select(driver.find_element(By.NAME, "collection")).select_by_visible_text(facts)
        box = driver.find_element(By.NAME, "question")
        box.send_keys("When was the Eiffel Tower finished?")
        driver.find_element(By.ID, "send").click()
        lengths: set[int] = set()
        wait = WebDriverWait(driver, 120, poll_frequency=0.05)

        def settled(d) -> bool:
            answers = d.find_elements(By.CSS_SELECTOR, ".assistant .answer")
            if answers:
                lengths.add(len(answers[-1].text))
            status = d.find_elements(By.CSS_SELECTOR, ".assistant[data-status]")
            return bool(status) and status[-1].get_attribute("data-status") in ("done", "error")

        wait.until(settled)
        assistant = driver.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
        assert assistant.get_attribute("data-status") == "done"
        assert len({n for n in lengths if n > 0}) >= 2, "the answer did not arrive in pieces"
        assert "1889" in assistant.find_element(By.CSS_SELECTOR, ".answer").text
        cite = assistant.find_element(By.CSS_SELECTOR, ".cite")
        cite.click()
        panel = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#side .passage-panel"))
        assert "1889" in panel.find_element(By.CSS_SELECTOR, "mark.cited").text
        assert "tower.md" in panel.text
        assert (
            panel.find_element(By.LINK_TEXT, "Download the original").get_attribute("download")
            is not None
        )
        assert "?c=" in driver.current_url  # the conversation is stored and addressable
