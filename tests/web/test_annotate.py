"""The annotate page in headless Chromium against a live server: claim from the queue, move a span
boundary by dragging its handle, save, meet a concurrent edit (412) made by a second key through the
API, merge, save, approve; and the same session by keyboard alone."""

from __future__ import annotations

import re
from typing import Any

import httpx
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.jobs.conftest import synthetic_payloads
from tests.web.page import css, open_page, toast, wait


def _ingest(admin: Any, n: int) -> list[str]:
    r = admin.post("/v1/trajectories/batch", json={"items": synthetic_payloads(n, seed=3)})
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text
    return [item["id"] for item in r.json()["items"]]


def _spans(client: Any, tid: str) -> dict[str, Any]:
    r = client.get(f"/v1/trajectories/{tid}/spans")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _claimed_id(driver: Any) -> str:
    return str(css(driver, "#editor-box h1 code").text)


def _selection(driver: Any) -> tuple[int, int, int]:
    """(span index, start, end) of the selected span, as the page announces it."""
    text = driver.find_element(By.CSS_SELECTOR, ".selection").text
    m = re.match(r"Span (\d+) of \d+: \w+, message \d+, (\d+)–(\d+)", text)
    assert m, text
    return int(m[1]) - 1, int(m[2]), int(m[3])


def test_claim_drag_save_conflict_merge_approve(server, admin, make_key, browser, shots) -> None:  # type: ignore[no-untyped-def]
    _ingest(admin, 2)
    key_a, key_b = make_key("annotate"), make_key("annotate")
    open_page(browser, server, key_a)
    css(browser, "#claim").click()
    tid = _claimed_id(browser)
    wait(browser, "the lease countdown", lambda d: "left" in d.find_element(By.CSS_SELECTOR, ".lease").text)
    base = _spans(admin, tid)
    assert base["revision"] == 1 and len(base["spans"]) >= 3
    shots(browser, "annotate")

    # drag the end handle of the first span to the middle of its first line: the span gets shorter
    first = base["spans"][0]
    handle = css(browser, 'mark[data-i="0"] .handle[data-side="end"]')
    target = browser.execute_script(
        "const r = arguments[0].getClientRects()[0]; return [r.left + r.width / 2, r.top + r.height / 2];",
        css(browser, 'mark[data-i="0"] .t'))
    here = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left + r.width / 2, "
                                  "r.top + r.height / 2];", handle)
    dx, dy = int(target[0] - here[0]), int(target[1] - here[1])
    ActionChains(browser).click_and_hold(handle).move_by_offset(dx // 2, dy // 2).move_by_offset(
        dx - dx // 2, dy - dy // 2).release().perform()
    wait(browser, "unsaved changes", lambda d: d.find_element(By.CSS_SELECTOR, ".dirty").text == "unsaved changes")
    index, start, end = _selection(browser)
    assert (index, start) == (0, first["start"]) and first["start"] < end < first["end"]
    css(browser, "#save").click()
    wait(browser, "the save", lambda d: "revision 2" in toast(d))
    saved = _spans(admin, tid)
    assert saved["revision"] == 2 and saved["spans"][0]["end"] == end
    assert saved["spans"][1:] == base["spans"][1:]

    # someone else saves revision 3 meanwhile (the last span loses its first character)
    with_b = [dict(s) for s in saved["spans"]]
    last = len(with_b) - 1
    with_b[last]["start"] += 1
    r = httpx.put(f"{server}/v1/trajectories/{tid}/spans", json={"spans": with_b, "reason": "other annotator"},
                  headers={"Authorization": f"Bearer {key_b}", "If-Match": '"2"'})
    assert r.status_code == 200 and r.json()["revision"] == 3, r.text

    # A edits span 1 (start one character right) and saves on revision 2: 412, their change shown
    browser.find_element(By.TAG_NAME, "body").send_keys("n")
    wait(browser, "span 1 selected", lambda d: _selection(d)[0] == 1)
    browser.switch_to.active_element.send_keys("]")
    mine_start = saved["spans"][1]["start"] + 1
    wait(browser, "the nudge", lambda d: _selection(d)[1] == mine_start)
    css(browser, "#save").click()
    conflict = wait(browser, "the conflict panel", lambda d: d.find_element(By.CSS_SELECTOR, ".conflict"))
    wait(browser, "the conflict panel", lambda d: conflict.is_displayed())
    assert "Revision 3 was saved by someone else" in conflict.text and "other annotator" in conflict.text
    assert _spans(admin, tid)["revision"] == 3  # nothing overwritten
    shots(browser, "annotate-conflict")

    # merge my edit onto theirs, save: both changes are kept
    css(browser, "#merge").click()
    wait(browser, "the merge", lambda d: "Merged 2 edit(s) onto revision 3" in toast(d))
    css(browser, "#save").click()
    wait(browser, "the save", lambda d: "revision 4" in toast(d))
    merged = _spans(admin, tid)
    assert merged["revision"] == 4
    assert merged["spans"][0]["end"] == end  # my drag
    assert merged["spans"][1]["start"] == mine_start  # my nudge
    assert merged["spans"][last]["start"] == with_b[last]["start"]  # their edit

    # select text inside the first span and press "a": an action span cuts the reason span in three
    text = css(browser, 'mark[data-i="0"] .t')
    browser.execute_script("const t = arguments[0].firstChild; getSelection().setBaseAndExtent(t, 2, t, 6);"
                           "arguments[0].dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));", text)
    wait(browser, "the selection",
         lambda d: "Selected 4 characters" in d.find_element(By.CSS_SELECTOR, ".selection").text)
    ActionChains(browser).send_keys("a").perform()
    s0 = merged["spans"][0]
    expected = [{**s0, "end": s0["start"] + 2},
                {**s0, "start": s0["start"] + 2, "end": s0["start"] + 6, "kind": "action"},
                {**s0, "start": s0["start"] + 6}, *merged["spans"][1:]]
    css(browser, "#save").click()
    wait(browser, "the save", lambda d: "revision 5" in toast(d))
    assert _spans(admin, tid)["spans"] == expected

    # approve: the status changes and the lease is completed (the other trajectory is claimable by B only)
    css(browser, "#review-approve").click()
    wait(browser, "the approval", lambda d: "approved" in toast(d))
    assert admin.get(f"/v1/trajectories/{tid}").json()["status"] == "approved"
    assert len(admin.get(f"/v1/trajectories/{tid}/revisions").json()["items"]) == 5

    # the history shows every revision and the diff from the automatic spans
    browser.find_element(By.TAG_NAME, "body").send_keys("h")
    history = wait(browser, "the history", lambda d: d.find_element(By.CSS_SELECTOR, ".history .difflist"))
    assert "changed" in browser.find_element(By.CSS_SELECTOR, ".history .diff").text
    assert len(browser.find_elements(By.CSS_SELECTOR, ".history tbody tr")) == 5 and history.is_displayed()


def test_a_queue_session_by_keyboard_alone(server, admin, make_key, browser) -> None:  # type: ignore[no-untyped-def]
    _ingest(admin, 1)
    open_page(browser, server, make_key("annotate"))
    claim = css(browser, "#claim")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(30):  # Tab through the page until the claim button has focus
        if browser.switch_to.active_element == claim:
            break
        ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element == claim
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    tid = _claimed_id(browser)
    focused = wait(browser, "a span to take focus",
                   lambda d: d.switch_to.active_element if d.switch_to.active_element.tag_name == "mark" else None)
    assert focused.value_of_css_property("outline-style") != "none"  # focus is visible
    before = _spans(admin, tid)["spans"]
    ActionChains(browser).send_keys("n").perform()
    wait(browser, "span 1 selected", lambda d: _selection(d)[0] == 1)
    ActionChains(browser).send_keys("{").perform()  # the end one character left
    wait(browser, "the nudge", lambda d: _selection(d)[2] == before[1]["end"] - 1)
    ActionChains(browser).send_keys("s").perform()
    wait(browser, "the save", lambda d: "revision 2" in toast(d))
    ActionChains(browser).key_down(Keys.SHIFT).send_keys("a").key_up(Keys.SHIFT).perform()  # Shift+A: approve
    wait(browser, "the approval", lambda d: "approved" in toast(d))
    after = admin.get(f"/v1/trajectories/{tid}").json()
    assert after["status"] == "approved" and after["span_revision"] == 2
    assert after["spans"][1]["end"] == before[1]["end"] - 1
    ActionChains(browser).send_keys("t").perform()  # the training view opens in place (an annotate key: no jobs)
    panel = wait(browser, "the training view", lambda d: d.find_element(By.CSS_SELECTOR, "section.training"))
    wait(browser, "the scope message", lambda d: "operate scope" in panel.text)


MERGE_CASES = r"""
const { merge3, addSpan, moveBoundary, cpToUtf16, utf16ToCp } = await import("/ui/spans.js");
const s = (message, start, end, kind) => ({ message, start, end, kind });
const base = [s(0, 0, 5, "reason"), s(0, 5, 9, "action"), s(1, 0, 4, "observation")];
const out = {};
// disjoint edits: both kept
out.disjoint = merge3(base, [s(0, 0, 4, "reason"), base[1], base[2]], [base[0], base[1], s(1, 1, 4, "observation")]);
// the same span edited by both: mine wins and theirs is reported
out.clash = merge3(base, [s(0, 0, 3, "reason"), base[1], base[2]], [s(0, 0, 2, "action"), base[1], base[2]]);
// I deleted a span they left alone: deleted
out.deleted = merge3(base, [base[0], base[2]], base);
// adding over two spans cuts them; a boundary never crosses a neighbour
out.added = addSpan(base, s(0, 3, 7, "action"));
out.moved = moveBoundary(base, 1, "start", 1, 9);
// span offsets are code points, the DOM's are UTF-16 units
out.offsets = [cpToUtf16("a\u{1F600}b", 2), utf16ToCp("a\u{1F600}b", 3)];
return out;
"""


def test_merge_and_edit_rules_in_the_page_module(server, browser) -> None:  # type: ignore[no-untyped-def]
    browser.get(f"{server}/ui/")
    out = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {MERGE_CASES} }})().then(done, (e) => done(String(e)));")
    span = lambda m, a, b, k: {"message": m, "start": a, "end": b, "kind": k}  # noqa: E731
    assert out["disjoint"]["spans"] == [span(0, 0, 4, "reason"), span(0, 5, 9, "action"), span(1, 1, 4, "observation")]
    assert out["disjoint"]["conflicts"] == []
    assert out["clash"]["spans"][0] == span(0, 0, 3, "reason")
    assert out["clash"]["conflicts"] == [span(0, 0, 2, "action")]
    assert out["deleted"]["spans"] == [span(0, 0, 5, "reason"), span(1, 0, 4, "observation")]
    assert out["added"] == [span(0, 0, 3, "reason"), span(0, 3, 7, "action"), span(0, 7, 9, "action"),
                            span(1, 0, 4, "observation")]
    assert out["moved"][1] == span(0, 5, 9, "action")  # stopped at the previous span's end
    assert out["offsets"] == [3, 2]


def test_leaving_the_page_gives_the_trajectory_back(server, admin, make_key, browser) -> None:  # type: ignore[no-untyped-def]
    (tid,) = _ingest(admin, 1)
    open_page(browser, server, make_key("annotate"))
    css(browser, "#claim").click()
    assert _claimed_id(browser) == tid
    other = {"Authorization": f"Bearer {make_key('annotate')}"}

    def claim_as_other() -> Any:
        r = httpx.post(f"{server}/v1/annotation-queue/claim", headers=other)
        return r.json() if r.status_code == 200 else None

    assert claim_as_other() is None  # 204: the page holds it
    browser.get("about:blank")  # pagehide: the page releases its lease with a keepalive request
    claimed = wait(browser, "the lease to be released", lambda _: claim_as_other())
    assert claimed["trajectory"]["id"] == tid
