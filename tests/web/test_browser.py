"""Real headless Chromium against a real server: what a person does in the browser."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.factories import make_docx, seed_quality_history
from tests.helpers import serving

pytestmark = pytest.mark.browser


def sign_in(driver, url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    driver.delete_all_cookies()
    driver.get(f"{url}/signin")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
    try:
        WebDriverWait(driver, 60).until(lambda d: "/signin" not in d.current_url)
    except TimeoutException:  # say what the page said (an error, a limit) rather than nothing
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"sign-in as {email} stayed at {driver.current_url}: {body}") from None


def test_upload_two_files_and_watch_both_reach_indexed(
    browser_driver, live_server: str, tmp_path: Path, admin_key: str
):
    driver = browser_driver
    sign_in(driver, live_server)
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
    # Rows replace themselves as they poll: read them in one go, in the page.
    wait.until(lambda d: rows(d) == [("faq.md", "indexed"), ("handbook.docx", "indexed")])
    assert [s.text for s in driver.find_elements(By.CSS_SELECTOR, "#document-rows .status")] == [
        "indexed",
        "indexed",
    ]
    driver.refresh()  # the rows are stored, not just drawn
    wait.until(lambda d: rows(d) == [("faq.md", "indexed"), ("handbook.docx", "indexed")])


def rows(driver) -> list[tuple[str, str]]:
    found = driver.execute_script(
        "return [...document.querySelectorAll('#document-rows tr[data-status]')]"
        ".map(r => [r.querySelector('.filename a, .filename').textContent.trim().split('\\n')[0],"
        " r.dataset.status])"
    )
    return sorted((name, status) for name, status in found)


def test_ask_see_the_answer_stream_and_open_a_citation(
    browser_driver, llm_settings, facts, admin_key
):
    driver = browser_driver
    with serving(create_app(llm_settings)) as url:
        sign_in(driver, url)
        driver.get(f"{url}/")
        Select(driver.find_element(By.NAME, "collection")).select_by_visible_text(facts)
        box = driver.find_element(By.NAME, "question")
        box.send_keys("When was the Eiffel Tower finished?")
        driver.find_element(By.ID, "send").click()
        lengths: set[int] = set()
        wait = WebDriverWait(
            driver, 120, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
        )

        def settled(d) -> bool:
            answers = d.find_elements(By.CSS_SELECTOR, ".assistant .answer")
            if answers:
                lengths.add(len(answers[-1].text))
            status = d.find_elements(By.CSS_SELECTOR, ".assistant[data-status]")
            return bool(status) and status[-1].get_attribute("data-status") in ("done", "error")

        wait.until(settled)
        assistant = driver.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
        assert assistant.get_attribute("data-status") == "done", assistant.text
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


def test_admin_grants_a_collection_and_members_see_only_what_they_may(
    browser_driver, llm_settings, admin_key, tmp_path: Path
):
    driver = browser_driver
    tag = uuid.uuid4().hex[:6]
    reader, outsider = f"reader-{tag}@tests.example", f"outsider-{tag}@tests.example"
    collection = f"private-{tag}"
    note = tmp_path / "lighthouse.md"
    note.write_text("# Lighthouse\n\nThe old lighthouse keeper retired in 1952.\n")
    wait = WebDriverWait(driver, 120, ignored_exceptions=[StaleElementReferenceException])
    with serving(create_app(llm_settings)) as url:
        sign_in(driver, url)
        driver.get(f"{url}/admin")
        for email in (reader, outsider):
            form = driver.find_element(By.CSS_SELECTOR, "#people form[hx-post='/admin/users']")
            form.find_element(By.NAME, "email").send_keys(email)
            form.find_element(By.NAME, "password").send_keys("a long enough password")
            form.find_element(By.CSS_SELECTOR, "button").click()
            wait.until(lambda d, e=email: d.find_elements(By.CSS_SELECTOR, f"tr[data-user='{e}']"))

        driver.get(f"{url}/documents")  # the admin makes the collection and fills it
        box = driver.find_element(By.NAME, "name")
        box.send_keys(collection)
        box.submit()
        wait.until(ec.url_contains(f"collection={collection}"))
        driver.find_element(By.ID, "file-input").send_keys(str(note))
        wait.until(lambda d: rows(d) == [("lighthouse.md", "indexed")])

        driver.get(f"{url}/admin")  # and lets the reader read it
        row = driver.find_element(By.CSS_SELECTOR, f"tr[data-collection='{collection}']")
        row.find_element(By.NAME, "email").send_keys(reader)
        row.find_element(By.CSS_SELECTOR, "form[hx-post$='/members'] button").click()
        wait.until(
            lambda d: (
                reader
                in d.find_element(By.CSS_SELECTOR, f"tr[data-collection='{collection}']").text
            )
        )

        sign_in(driver, url, reader, "a long enough password")
        driver.get(f"{url}/search?q=lighthouse+keeper")
        hits = driver.find_elements(By.CSS_SELECTOR, "#results article.hit")
        assert hits and all(collection in h.text for h in hits)
        assert "Lighthouse" in hits[0].text
        options = [
            o.text for o in driver.find_elements(By.CSS_SELECTOR, "select[name=collection] option")
        ]
        assert options == ["all collections", collection]  # nothing else is visible
        answer = ask_in_chat(driver, url, "When did the lighthouse keeper retire?", wait)
        assert "lighthouse.md" in answer.text or "Lighthouse" in answer.text

        sign_in(driver, url, outsider, "a long enough password")
        driver.get(f"{url}/search?q=lighthouse+keeper")
        assert driver.find_elements(By.CSS_SELECTOR, "#results article.hit") == []
        assert "Nothing found" in driver.find_element(By.ID, "results").text
        answer = ask_in_chat(driver, url, "When did the lighthouse keeper retire?", wait)
        assert "The documents do not cover this." in answer.text
        assert "lighthouse" not in answer.text.lower().replace("when did the lighthouse", "")


def ask_in_chat(driver, url: str, question: str, wait):
    driver.get(f"{url}/")
    driver.find_element(By.NAME, "question").send_keys(question)
    driver.find_element(By.ID, "send").click()
    wait.until(
        lambda d: (
            (a := d.find_elements(By.CSS_SELECTOR, ".assistant[data-status]"))
            and a[-1].get_attribute("data-status") in ("done", "error")
        )
    )
    assistant = driver.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
    assert assistant.get_attribute("data-status") == "done", assistant.text
    return assistant


def test_api_docs_and_pages_work_under_the_content_security_policy(
    browser_driver, live_server: str, admin_key: str
):
    """Swagger UI (started from a script file) renders, and the admin page's live panels
    poll through htmx: nothing the policy forbids is needed."""
    driver = browser_driver
    driver.get(f"{live_server}/docs")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: "Groundwork" in d.find_element(By.CSS_SELECTOR, ".swagger-ui").text)
    assert driver.find_elements(By.CSS_SELECTOR, ".opblock")  # the operations are listed
    sign_in(driver, live_server)
    driver.get(f"{live_server}/admin")
    jobs = driver.find_element(By.ID, "jobs")
    wait.until(ec.staleness_of(jobs))  # htmx replaced the panel: its script ran
    assert driver.find_element(By.ID, "jobs").is_displayed()


def test_quality_page_and_an_answer_trace(
    browser_driver, llm_settings, facts, admin_key, tmp_path: Path
):
    """An admin asks, opens the Quality page (its charts drawn on the server, coloured by the
    stylesheet under the CSP) and the trace of the answer just given."""
    driver = browser_driver
    seed_quality_history()
    wait = WebDriverWait(driver, 120, ignored_exceptions=[StaleElementReferenceException])
    with serving(create_app(llm_settings)) as url:
        sign_in(driver, url)
        driver.get(f"{url}/")
        Select(driver.find_element(By.NAME, "collection")).select_by_visible_text(facts)
        driver.find_element(By.NAME, "question").send_keys("When was the Eiffel Tower finished?")
        driver.find_element(By.ID, "send").click()
        wait.until(
            lambda d: (
                (a := d.find_elements(By.CSS_SELECTOR, ".assistant[data-status]"))
                and a[-1].get_attribute("data-status") in ("done", "error")
            )
        )
        driver.refresh()  # the stored answer offers its trace to an admin
        trace_links = driver.find_elements(By.CSS_SELECTOR, ".assistant a.trace-link")
        assert trace_links, "no trace link on the answer"

        driver.get(f"{url}/admin")
        driver.find_element(By.ID, "quality-link").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 8)
        line = driver.find_element(By.CSS_SELECTOR, "#answers-by-day svg.chart polyline.s0")
        assert line.value_of_css_property("stroke") == "rgb(40, 86, 200)"  # app.css applied
        assert line.value_of_css_property("fill") == "none"
        bars = driver.find_elements(By.CSS_SELECTOR, "#answers-by-day rect.bar.o-answered")
        assert len(bars) >= 15
        flags = driver.find_element(By.CSS_SELECTOR, "#drift .flags").text
        assert "declined share 75%" in flags and "mean relevance" in flags
        assert driver.find_elements(By.CSS_SELECTOR, "#drift circle.flag")
        assert "quality-scifact" in driver.find_element(By.ID, "evals").text
        _full_page_screenshot(driver, tmp_path / "quality.png")

        newest = driver.find_element(By.CSS_SELECTOR, "#recent tbody tr a")
        assert "Eiffel" in newest.text
        newest.click()
        wait.until(ec.url_contains("/admin/answers/"))
        prompt = driver.find_element(By.CSS_SELECTOR, "#trace-prompt pre.prompt:last-of-type").text
        assert "Eiffel" in prompt and "[1]" in prompt
        facts_shown = driver.find_element(By.ID, "trace-llm").text
        assert "Tokens per second" in facts_shown and "LLM time to first token" in facts_shown
        rows = driver.find_elements(By.CSS_SELECTOR, "#trace-passages tbody tr[data-chunk]")
        assert rows and "tower.md" in rows[0].text
        assert "search · embed" in driver.find_element(By.ID, "trace-timings").text
        assert driver.find_elements(By.CSS_SELECTOR, "#trace-answer table tbody tr")
        _full_page_screenshot(driver, tmp_path / "trace.png")


def _full_page_screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 120, 8000))
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(1280, 1000)


def test_chat_filters_show_as_chips_that_remove_them_and_narrow_the_answer(
    browser_driver, settings, facts, admin_key
):
    driver = browser_driver
    nowhere = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    with serving(create_app(nowhere)) as url:
        sign_in(driver, url)
        driver.get(f"{url}/")
        Select(driver.find_element(By.NAME, "collection")).select_by_visible_text(facts)
        driver.find_element(By.CSS_SELECTOR, ".filters summary").click()
        driver.find_element(By.CSS_SELECTOR, 'input[name="file_types"][value="pdf"]').click()
        driver.find_element(By.NAME, "labels").send_keys("hr, policy")
        wait = WebDriverWait(driver, 60, ignored_exceptions=[StaleElementReferenceException])

        def chips(d) -> list[str]:
            return [c.text for c in d.find_elements(By.CSS_SELECTOR, "#filter-chips .chip")]

        wait.until(lambda d: chips(d) == ["type: pdf ×", "label: hr ×", "label: policy ×"])
        driver.find_elements(By.CSS_SELECTOR, "#filter-chips .chip")[1].click()  # label: hr
        wait.until(lambda d: chips(d) == ["type: pdf ×", "label: policy ×"])
        assert driver.find_element(By.NAME, "labels").get_attribute("value") == "policy"
        driver.find_element(By.CSS_SELECTOR, "#filter-chips .chip").click()  # type: pdf
        wait.until(lambda d: chips(d) == ["label: policy ×"])
        driver.find_element(By.NAME, "labels").clear()
        driver.find_element(By.CSS_SELECTOR, 'input[name="file_types"][value="pdf"]').click()
        wait.until(lambda d: chips(d) == ["type: pdf ×"])
        # No PDF in the collection: the answer declines without asking the (absent) LLM.
        driver.find_element(By.NAME, "question").send_keys("When was the Eiffel Tower finished?")
        driver.find_element(By.ID, "send").click()
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, ".assistant[data-status]")
                and d.find_elements(By.CSS_SELECTOR, ".assistant")[-1].get_attribute("data-status")
                in ("done", "error")
            )
        )
        assistant = driver.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
        assert "do not cover" in assistant.find_element(By.CSS_SELECTOR, ".answer").text
        assert "filtered by type: pdf" in assistant.find_element(By.CSS_SELECTOR, ".query").text
