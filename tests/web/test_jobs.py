"""The operator's pages in headless Chromium against a live server and a real worker: a distill job's
curves grow live over SSE while it trains, the job is cancelled from its page; the training view shows
a trajectory's tokens with the kinds that job's student is trained on; a dataset's stats and items."""

from __future__ import annotations

import json
import uuid

from selenium.webdriver.common.by import By

from tests.jobs.conftest import distill_spec, make_dataset
from tests.web.page import css, open_page, wait
from worker.loop import start_background_worker


def test_watch_a_running_job_cancel_it_and_see_its_training_view(  # type: ignore[no-untyped-def]
        server, admin, make_key, browser, shots, settings, database_url, web_models) -> None:
    dataset = make_dataset(admin, 6)
    spec = distill_spec(dataset["id"], training={"max_steps": 5000, "checkpoint_every": 0, "eval_max_examples": 0})
    r = admin.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    open_page(browser, server, make_key("operate"), f"#/jobs/{job_id}")
    wait(browser, "the job page", lambda d: d.find_element(By.ID, "job-status").text == "queued")
    assert css(browser, ".charts").get_attribute("data-steps") == "0"
    stop = start_background_worker(database_url, settings, kinds=["distill"], poll_interval=0.2,
                                   worker_id=f"web-{uuid.uuid4().hex[:6]}")
    try:
        # the page loaded with no metrics and never reloads them while the job runs: what it draws came over SSE
        wait(browser, "five steps drawn live",
             lambda d: int(d.find_element(By.CSS_SELECTOR, ".charts").get_attribute("data-steps")) >= 5, timeout=90)
        assert admin.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        assert browser.find_element(By.ID, "job-status").text == "running"
        lines = browser.find_elements(By.CSS_SELECTOR, '.charts polyline[data-series="reason"]')
        assert lines and int(lines[0].get_attribute("data-points")) >= 5
        shots(browser, "job")
        css(browser, "#cancel").click()
        wait(browser, "the job to be cancelled",
             lambda d: d.find_element(By.ID, "job-status").text == "cancelled", timeout=60)
        wait(browser, "the artifact list", lambda d: d.find_elements(By.CSS_SELECTOR, ".files li"))
        assert admin.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert "token_views.jsonl" in browser.find_element(By.CSS_SELECTOR, ".files").text
        assert "cancelled" in browser.find_element(By.CSS_SELECTOR, ".events").text
        assert css(browser, "#retry").is_displayed() and not browser.find_elements(By.ID, "cancel")

        # a short job, watched to the end: the eval report before/after and the final model appear
        short = admin.post("/v1/jobs", json=distill_spec(dataset["id"], training={"max_steps": 2})).json()["id"]
        browser.execute_script("location.hash = arguments[0]", f"#/jobs/{short}")
        wait(browser, "the short job to succeed",
             lambda d: d.find_element(By.ID, "job-status").text == "succeeded", timeout=120)
        report = wait(browser, "the eval report", lambda d: d.find_elements(By.CSS_SELECTOR, ".report tbody tr"))
        assert any(row.text.startswith("action.nll ") for row in report)
        files = css(browser, ".files").text
        assert "final/model.safetensors" in files and "eval_report.json" in files
        shots(browser, "job-finished")
    finally:
        stop()

    # the training view: the page shows exactly the kinds the trainer's renderer gives this record
    from transformers import AutoTokenizer

    from worker.training.render import ACTION, REASON, render_examples

    records = [json.loads(line) for line in admin.get(f"/v1/datasets/{dataset['id']}/export").text.splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(web_models / "student")

    def rendered(r: dict) -> list:  # type: ignore[type-arg]
        return render_examples(r["messages"], r["spans"], tokenizer, max_seq_len=spec["training"]["max_seq_len"],
                               tools=r["tools"]).examples

    def shows_tool_output(r: dict, examples: list) -> bool:  # type: ignore[type-arg]
        # truncation keeps the window with the most supervised tokens, which may leave a record's tool output out
        text = "".join(tokenizer.decode(e.input_ids) for e in examples)
        return any(m["role"] == "tool" and m["text"].strip() and m["text"].strip() in text for m in r["messages"])

    record, examples = next((r, ex) for r in records if r["split"] == "train"
                            for ex in [rendered(r)] if shows_tool_output(r, ex))
    browser.execute_script("location.hash = arguments[0]", f"#/training/{record['id']}")
    tokens = wait(browser, "the token view", lambda d: d.find_elements(By.CSS_SELECTOR, ".tokens .tok"))
    assert len(tokens) == sum(len(e.input_ids) for e in examples)
    counts = {k: len(browser.find_elements(By.CSS_SELECTOR, f".tokens .tok.t-{k}")) for k in "raoc"}
    assert counts["r"] == sum(e.kinds.count(REASON) for e in examples) > 0
    assert counts["a"] == sum(e.kinds.count(ACTION) for e in examples) > 0
    assert counts["o"] > 0  # the tool outputs, context to training, marked from the observation spans
    eot = browser.find_elements(By.CSS_SELECTOR, ".tokens .tok.eot")
    assert eot and all(e.get_attribute("data-kind") == "action" for e in eot)
    assert eot[0].text.startswith("<|im_end|>")
    shots(browser, "training-view")

    # the token-views endpoint: only the job's first trajectories, a clear 404 otherwise
    r = admin.get(f"/v1/jobs/{job_id}/token-views/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["code"] == "token_views_not_found"
    assert admin.get(f"/v1/jobs/{job_id}/token-views/{record['id']}").json()["examples"][0]["kinds"].count("r") == \
        counts["r"] or len(examples) > 1

    # the dataset page: kinds, the complexity histogram (10 bins), the items
    browser.execute_script("location.hash = arguments[0]", f"#/datasets/{dataset['id']}")
    wait(browser, "the histogram", lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.chart rect")) == 10)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.grid tbody tr")
    assert sum(1 for row in rows if "training view" in row.text) == dataset["stats"]["n_items"]

    # the lists: datasets, and jobs with their status and progress
    browser.execute_script("location.hash = '#/datasets'")
    wait(browser, "the dataset list", lambda d: dataset["name"] in d.find_element(By.TAG_NAME, "main").text)
    browser.execute_script("location.hash = '#/jobs'")
    rows = wait(browser, "the job list", lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-status]"))
    assert sorted(r.get_attribute("data-status") for r in rows) == ["cancelled", "succeeded"]
    assert any("2/2" in r.text for r in rows)
