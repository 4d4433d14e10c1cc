"""Evaluation as a job in the browser: it survives a reload, a second browser sees the same job,
and it can be cancelled and resumed. The tiny model on the sample questions, base variant only
(no index needed), so each test stands alone."""

from __future__ import annotations

import pytest

from .conftest import app_fixture, open_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


running_app = app_fixture("eval-app-home", "evaljob")


def _open(browser, url):
    context, page = open_page(browser, url)
    page.get_by_role("tab", name="Evaluate").click()
    return context, page


def _choose(page, limit: int, max_tokens: int) -> None:
    page.locator("#eval-variants").get_by_label("rag", exact=True).uncheck()
    box = page.locator("#eval-limit input")
    box.fill(str(limit))
    box.press("Tab")
    page.locator("#eval-advanced").get_by_text("Advanced").first.click()
    tokens = page.locator("#eval-max-tokens input[type=number]")
    tokens.fill(str(max_tokens))
    tokens.press("Enter")


def _state(page) -> dict:
    return page.evaluate("() => { const e = document.querySelector('#eval-state');"
                         " return e ? {status: e.dataset.status, job: e.dataset.job, done: +e.dataset.done,"
                         " total: +e.dataset.total} : {}; }")


def _wait_status(page, status: str, timeout: int = 300_000, job: str | None = None) -> dict:
    page.wait_for_function("([s, j]) => { const e = document.querySelector('#eval-state');"
                           " return e && e.dataset.status === s && (!j || e.dataset.job === j); }",
                           arg=[status, job], timeout=timeout)
    return _state(page)


def test_evaluation_survives_a_reload_and_shows_its_result(browser, running_app):
    context, page = _open(browser, running_app.url)
    _choose(page, limit=4, max_tokens=24)
    page.locator("#eval-run").click()
    page.wait_for_function("() => { const e = document.querySelector('#eval-state');"
                           " return e && e.dataset.job && e.dataset.status === 'running'; }", timeout=60_000)
    job = _state(page)["job"]

    page.reload()
    page.get_by_role("tab", name="Evaluate").click()
    done = _wait_status(page, "succeeded", job=job)
    assert done["done"] == done["total"] == 4
    page.wait_for_function("() => /token_f1/.test(document.querySelector('#eval-table').innerText)")
    assert "base" in page.locator("#eval-table").inner_text()
    assert page.locator("#eval-recommendation").inner_text().strip()
    context.close()


def test_another_browser_sees_cancels_and_resumes_the_same_evaluation(browser, running_app):
    first, page_a = _open(browser, running_app.url)
    _choose(page_a, limit=40, max_tokens=96)
    page_a.locator("#eval-run").click()
    page_a.wait_for_function("() => { const e = document.querySelector('#eval-state');"
                             " return e && e.dataset.status === 'running' && +e.dataset.done >= 1; }",
                             timeout=120_000)
    job = _state(page_a)["job"]

    second, page_b = _open(browser, running_app.url)  # another browser: no shared page state
    page_b.wait_for_function("j => { const e = document.querySelector('#eval-state');"
                             " return e && e.dataset.job === j && e.dataset.status === 'running'; }", arg=job)
    assert _state(page_b)["total"] == 40
    page_b.locator("#eval-cancel").click()
    stopped = _wait_status(page_b, "cancelled", timeout=120_000, job=job)
    assert stopped["done"] < 40
    _wait_status(page_a, "cancelled", timeout=30_000, job=job)  # the first browser sees it too

    page_a.locator("#eval-resume").click()
    page_a.wait_for_function("j => document.querySelector('#eval-state').dataset.status === 'running'", arg=job)
    done = _wait_status(page_a, "succeeded", job=job)
    assert done["done"] == 40
    page_a.wait_for_function("() => /token_f1/.test(document.querySelector('#eval-table').innerText)")
    _wait_status(page_b, "succeeded", timeout=30_000, job=job)
    assert "Traceback" not in page_a.locator("body").inner_text()
    first.close()
    second.close()
