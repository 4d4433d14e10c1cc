"""The whole loop on the tiny model: end users rate and correct answers on the chat page, the next
round turns that into a new dataset version and adapter, which is published, then rolled back."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ragtune import feedback
from ragtune.jobs import wait_job
from serving.deploy import deployments, keys
from serving.deploy.server import DeployLimits, DeployServer, build_deploy_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

FACTS = [("What colour is the K7 robot?", "The K7 robot is orange."),
         ("How much can the K7 lift?", "The K7 lifts 40 kg."),
         ("Who founded Lumora?", "Lumora was founded by Ada Reyes."),
         ("When was Lumora founded?", "Lumora was founded in 2019.")]
HELD_OUT = ("Where is Lumora based?", "Lumora is based in Porto.")
CORRECTED = ("What is the K7 battery life?", "The K7 battery lasts 9 hours.")
APPROVED_Q = "What does Lumora make?"


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def ask_on_page(page, question: str) -> str:
    """Type a question on the chat page; returns the answer once its feedback bar appears."""
    before = page.locator(".feedback").count()
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.locator(".feedback").nth(before).wait_for(timeout=60_000)
    bubble = page.locator(".msg.assistant").nth(before + 1)  # +1: the welcome message
    return bubble.evaluate("el => el.firstChild.textContent")


def test_feedback_next_round_publish_and_rollback(workspace, tiny_engine):
    from app.next_round import list_rounds, start_next_round
    from app.wiring import OPERATIONS
    from training.config import defaults_for
    from training.dataset_store import get_dataset, save_dataset_version
    from training.jobs import TRAIN

    ws = workspace
    v1 = save_dataset_version(ws, {"train": [chat(q, a) for q, a in FACTS], "validation": [],
                                   "test": [{"question": HELD_OUT[0], "answer": HELD_OUT[1], "doc": None, "page": None,
                                             **chat(*HELD_OUT)}]}, {"source": "test", "teacher": None})
    job = OPERATIONS.start(ws, TRAIN, defaults_for("tiny-llama", dataset=v1.name, adapter_name="first"))
    assert wait_job(ws, job.id, timeout=600).status == "succeeded"
    first = deployments.publish(ws, "ft", "first", note="round 0")

    key = keys.create_key(ws, "checker", 1000)
    app = build_deploy_app(ws, tiny_engine, limits=DeployLimits(default_max_tokens=24, max_tokens=24))
    with DeployServer(app) as server:
        from playwright.sync_api import sync_playwright

        assert Path(CHROMIUM).exists(), "Debian chromium is missing"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page()
            page.goto(f"{server.url}/chat/{ws.name}")
            for question in (CORRECTED[0], CORRECTED[0], HELD_OUT[0]):  # twice: the dedup must keep one row
                ask_on_page(page, question)
                bar = page.locator(".feedback").last
                bar.get_by_title("Bad answer").click()
                bar.get_by_text("Suggest a correction").click()
                bar.locator("textarea").fill(CORRECTED[1] if question == CORRECTED[0] else HELD_OUT[1])
                bar.get_by_text("Send correction").click()
                page.wait_for_function("() => [...document.querySelectorAll('.feedback')].pop()"
                                       ".querySelector('.thanks').textContent.includes('Thanks')")
            ask_on_page(page, APPROVED_Q)
            page.locator(".feedback").last.get_by_title("Good answer").click()
            page.locator(".feedback .thanks").last.filter(has_text="Thanks").wait_for()
            browser.close()

        def ask(question: str) -> dict:
            r = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                           json={"messages": [{"role": "user", "content": question}]}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()

        before = ask(CORRECTED[0])
        assert before["ragtune"]["adapter"] == "first"
        rows = feedback.list_feedback(ws)
        assert len(rows) == 4 and {r["adapter"] for r in rows} == {"first"}
        assert {r["deployment_version"] for r in rows} == {first.version}

        record = start_next_round(ws, OPERATIONS, wait=True, publish=True, timeout=600)
        assert record.status == "published" and record.adapter != "first"
        new_data = get_dataset(ws, record.dataset)
        train_questions = [r["messages"][0]["content"] for r in new_data.rows("train")]
        assert train_questions.count(CORRECTED[0]) == 1
        assert {"role": "assistant", "content": CORRECTED[1]} in next(
            r["messages"] for r in new_data.rows("train") if r["messages"][0]["content"] == CORRECTED[0])
        assert APPROVED_Q in train_questions and HELD_OUT[0] not in train_questions
        assert all(q in train_questions for q, _ in FACTS)
        assert new_data.rows("test") == v1.rows("test")
        assert new_data.manifest["parent"] == v1.name
        assert all(r["used_in_round"] == record.round_id for r in feedback.list_feedback(ws))
        assert list_rounds(ws)[0].deployment_version == deployments.current(ws).version

        after = ask(CORRECTED[0])
        assert after["ragtune"]["adapter"] == record.adapter
        assert after["choices"][0]["message"]["content"].strip() == CORRECTED[1]  # the correction was learned

        restored = deployments.rollback(ws)
        assert restored.version == first.version and restored.adapter == "first"
        back = ask(CORRECTED[0])
        assert back["ragtune"]["adapter"] == "first" and back["ragtune"]["deployment_version"] == first.version
        assert back["choices"][0]["message"]["content"] == before["choices"][0]["message"]["content"] != CORRECTED[1]
