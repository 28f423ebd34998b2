"""Segmenter statistics against hand-computed numbers, and the text / HTML renderings."""

from __future__ import annotations

import uuid

import pytest

from tests.annotations.helpers import AUTO, edit, ingest, keyed_client, put_spans
from tests.app.payloads import REACT, openai


def _approve(client, tid):  # type: ignore[no-untyped-def]
    assert client.post(f"/v1/trajectories/{tid}/review", json={"action": "approve"}).status_code == 200


def test_segmenter_quality_by_hand(app, client):
    edited = ingest(client, "st-a")
    # m2: reason 0..21 + action 21..99 → reason 0..10 + action 10..99; m4 action → reason
    r = edit(client, edited, [{"op": "move", "index": 0, "end": 10}, {"op": "move", "index": 1, "start": 10},
                              {"op": "set_kind", "index": 3, "kind": "reason"}])
    assert r.status_code == 200, r.text
    _approve(client, edited)
    _approve(client, ingest(client, "st-b"))                       # approved untouched
    react = client.post("/v1/trajectories", json=REACT).json()["id"]
    _approve(client, react)
    pending = ingest(client, "st-d")                                # edited but not approved: ignored
    put_spans(client, pending, AUTO[:1])
    client_spans = client.post("/v1/trajectories", json=openai("st-e", spans=AUTO)).json()["id"]
    _approve(client, client_spans)                                  # revision 1 is not automatic: ignored

    annotator = keyed_client(app, client, ["annotate"], "ann")
    r = annotator.get("/v1/stats/annotation?source=support-agent")
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["trajectories"], s["touched"]) == (2, 1)
    assert [f["format"] for f in s["formats"]] == ["openai"]
    k = s["overall"]
    # edited: reason auto 21 / final 10+18 / agree 10; action auto 78+18 / final 89 / agree 78; observation 14/14/14
    # untouched: reason 21/21/21; action 96/96/96; observation 14/14/14
    assert (k["reason"]["auto_chars"], k["reason"]["final_chars"], k["reason"]["agree_chars"]) == (42, 49, 31)
    assert k["reason"]["precision"] == pytest.approx(31 / 42) and k["reason"]["recall"] == pytest.approx(31 / 49)
    assert k["reason"]["f1"] == pytest.approx(2 * 31 / (42 + 49))
    assert (k["action"]["auto_chars"], k["action"]["final_chars"], k["action"]["agree_chars"]) == (192, 185, 174)
    assert k["action"]["f1"] == pytest.approx(2 * 174 / (192 + 185))
    assert k["observation"]["precision"] == k["observation"]["recall"] == k["observation"]["f1"] == 1.0
    assert (k["reason"]["auto_spans"], k["reason"]["final_spans"], k["reason"]["exact_spans"]) == (2, 3, 1)
    assert (k["action"]["auto_spans"], k["action"]["final_spans"], k["action"]["exact_spans"]) == (4, 3, 2)
    assert (k["observation"]["auto_spans"], k["observation"]["exact_spans"]) == (2, 2)

    everything = client.get("/v1/stats/annotation").json()
    assert (everything["trajectories"], everything["touched"]) == (3, 1)
    assert [f["format"] for f in everything["formats"]] == ["openai", "react"]
    react_only = client.get("/v1/stats/annotation?format=react").json()
    assert react_only["trajectories"] == 1 and react_only["touched"] == 0
    for kind in ("reason", "action", "observation"):
        assert react_only["overall"][kind]["f1"] == 1.0
    empty = client.get("/v1/stats/annotation?source=nobody").json()
    assert empty["trajectories"] == 0 and empty["overall"]["reason"]["precision"] is None
    assert client.get("/v1/stats/annotation?format=xml").status_code == 422
    operator = keyed_client(app, client, ["operate"], "op")
    assert operator.get("/v1/stats/annotation").status_code == 403


def _hostile(client):  # type: ignore[no-untyped-def]
    body = openai("render", messages=[
        {"role": "user", "content": "<script>alert('x')</script> & \"quotes\""},
        {"role": "assistant", "content": "Use <b>bold</b> here."},
    ])
    body.pop("tools")
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_render_text_marks_spans(client):
    tid = ingest(client, "rt")
    r = client.get(f"/v1/trajectories/{tid}/render?format=text")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "### [0] system\nYou are a helpful assistant.\n\n### [1] user\nWeather in NYC? ☀️\n\n" in text
    assert "### [2] assistant\n[reason]I should look it up.\n[/reason][action]<tool_call>\n" in text
    assert "</tool_call>[/action]\n\n### [3] tool\n[observation]{\"temp_c\": 21}[/observation]" in text
    assert text.endswith("### [4] assistant\n[action]It is 21°C in NYC.[/action]\n")
    # an older revision renders on request
    edit(client, tid, [{"op": "set_kind", "index": 3, "kind": "reason"}])
    assert "[reason]It is 21°C in NYC.[/reason]" in client.get(f"/v1/trajectories/{tid}/render").text
    old = client.get(f"/v1/trajectories/{tid}/render?format=text&revision=1").text
    assert "[action]It is 21°C in NYC.[/action]" in old
    assert client.get(f"/v1/trajectories/{tid}/render?revision=7").status_code == 404


def test_render_html_escapes_and_colours(client):
    tid = _hostile(client)
    r = client.get(f"/v1/trajectories/{tid}/render?format=html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert '<span class="k-action" title="span 0: action 0..21">Use &lt;b&gt;bold&lt;/b&gt; here.</span>' in page
    for kind in ("reason", "action", "observation"):
        assert f".k-{kind} {{ background:" in page and f'<li><span class="k-{kind}">{kind}</span></li>' in page
    assert "<h2>[1] assistant</h2>" in page


def test_render_html_titles_number_spans(client):
    tid = ingest(client, "rh")
    page = client.get(f"/v1/trajectories/{tid}/render?format=html").text
    assert '<span class="k-reason" title="span 0: reason 0..21">I should look it up.\n</span>' in page
    assert 'title="span 2: observation 0..14"' in page and 'title="span 3: action 0..18"' in page
    assert client.get(f"/v1/trajectories/{tid}/render?format=pdf").status_code == 422
    assert client.get(f"/v1/trajectories/{uuid.uuid4()}/render").status_code == 404
