"""ReAct plain text (FireAct, LangChain): turns, observation boundaries, spans, round trips, errors."""

from __future__ import annotations

import pytest

from contract.formats import export
from tests.trajectories._checks import check, error_of, pieces


def roles(pt) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["role"] for m in pt.messages]


def test_langchain_multiline_action_input_and_final_answer() -> None:
    text = (
        "Thought: I need the population.\n"
        "Action: wiki_search\n"
        "Action Input: {\n"
        '  "query": "Paris population",\n'
        '  "lang": "en"\n'
        "}\n"
        "Observation: Paris has 2.1 million inhabitants.\n"
        "It is the capital of France.\n"
        "Thought: I now know the final answer.\n"
        "Final Answer: About 2.1 million."
    )
    pt = check("react", {"text": text, "task": "How many people live in Paris?"})
    assert roles(pt) == ["user", "assistant", "tool", "assistant"]
    assert pt.messages[0]["text"] == "How many people live in Paris?"
    assert pieces(pt, 1) == [
        ("reason", "Thought: I need the population.\n"),
        ("action", 'Action: wiki_search\nAction Input: {\n  "query": "Paris population",\n  "lang": "en"\n}'),
    ]
    assert pt.messages[2]["text"] == "Paris has 2.1 million inhabitants.\nIt is the capital of France."
    assert pieces(pt, 2) == [("observation", pt.messages[2]["text"])]
    assert pieces(pt, 3) == [("reason", "Thought: I now know the final answer.\n"),
                             ("action", "Final Answer: About 2.1 million.")]


def test_fireact_numbered_labels_with_question_block() -> None:
    text = (
        "Question: Which magazine was started first?\n"
        "Thought 1: I need to search both.\n"
        "Action 1: Search[Arthur's Magazine]\n"
        "Observation 1: Arthur's Magazine (1844–1846) was an American literary periodical.\n"
        "Thought 2: Now the other one.\n"
        "Action 2: Search[First for Women]\n"
        "Observation 2: First for Women is a woman's magazine started in 1989.\n"
        "Thought 3: 1844 < 1989.\n"
        "Action 3: Finish[Arthur's Magazine]"
    )
    without_task = check("react", {"text": text})
    assert without_task.messages[0]["text"] == "Which magazine was started first?"
    with_task = check("react", {"text": text, "task": "Q?"})
    assert with_task.messages[0]["text"] == "Q?"
    assert with_task.messages[1:] == without_task.messages[1:]
    pt = with_task
    assert roles(pt) == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert pieces(pt, 1) == [("reason", "Thought 1: I need to search both.\n"),
                             ("action", "Action 1: Search[Arthur's Magazine]")]
    assert pt.messages[2]["text"] == "Arthur's Magazine (1844–1846) was an American literary periodical."
    assert pieces(pt, 5) == [("reason", "Thought 3: 1844 < 1989.\n"), ("action", "Action 3: Finish[Arthur's Magazine]")]
    assert export("react", pt.messages, None)["text"].count("Observation: ") == 2


def test_observation_containing_thought_mid_line_and_at_line_start() -> None:
    text = (
        "Thought: Search the quote.\n"
        "Action: search[quote]\n"
        "Observation: The page says Thought: is a label. Another line.\n"
        "Thought: this line is part of the tool's output.\n"
        "More output.\n"
        "Thought: Now I know.\n"
        "Action: finish[done]"
    )
    pt = check("react", {"text": text, "task": "t"})
    assert roles(pt) == ["user", "assistant", "tool", "assistant"]
    assert pt.messages[2]["text"] == (
        "The page says Thought: is a label. Another line.\n"
        "Thought: this line is part of the tool's output.\n"
        "More output."
    )
    assert pt.messages[3]["text"] == "Thought: Now I know.\nAction: finish[done]"


def test_observation_may_hold_action_input_lines_and_ends_at_action_without_thought() -> None:
    text = (
        "Action: lookup\nAction Input: a\n"
        "Observation: echo:\nAction Input: a\n"
        "Action: lookup\nAction Input: b\n"
        "Observation: 2"
    )
    pt = check("react", {"text": text, "task": "t"})
    assert roles(pt) == ["user", "assistant", "tool", "assistant", "tool"]
    assert pt.messages[2]["text"] == "echo:\nAction Input: a"
    assert pieces(pt, 3) == [("action", "Action: lookup\nAction Input: b")]
    assert pt.messages[4]["text"] == "2"


def test_langchain_scratchpad_without_first_label_unicode_and_emoji() -> None:
    text = (
        " Je dois chercher « Zürich » 🔍\n"
        "Action: search\n"
        "Action Input: Zürich 🇨🇭\n"
        "Observation: Zürich — 421 878 habitants 🏙️\n"
        "Thought: J'ai la réponse ✅\n"
        "Final Answer: 421 878 🎉"
    )
    pt = check("react", {"text": text, "task": "Combien d'habitants à Zürich ?"})
    assert pieces(pt, 1) == [("reason", " Je dois chercher « Zürich » 🔍\n"),
                             ("action", "Action: search\nAction Input: Zürich 🇨🇭")]
    final = [s for s in pt.spans if s["message"] == 3][-1]
    assert pt.messages[3]["text"][final["start"] : final["end"]] == "Final Answer: 421 878 🎉"


def test_observation_spacing_empty_observations_and_trailing_observation() -> None:
    text = "Observation:\nThought: start\nAction: a\nObservation:   spaced\n\nObservation: \n"
    pt = check("react", {"text": text, "task": "t"})
    assert [(m["role"], m["text"]) for m in pt.messages[1:]] == [
        ("tool", ""), ("assistant", "Thought: start\nAction: a"), ("tool", "  spaced\n"), ("tool", "\n")]
    assert pieces(pt, 1) == []


def test_final_answer_spanning_lines_and_crlf_kept() -> None:
    text = "Thought: easy\r\nFinal Answer: line one\nline two\n"
    pt = check("react", {"text": text, "task": "t"})
    assert pt.messages[1]["text"] == "Thought: easy\r\nFinal Answer: line one\nline two\n"
    assert pieces(pt, 1) == [("reason", "Thought: easy\r\n"), ("action", "Final Answer: line one\nline two\n")]


@pytest.mark.parametrize("payload, field, code", [
    ({"task": "t"}, "text", "missing_field"),
    ({"text": 3, "task": "t"}, "text", "invalid_type"),
    ({"text": " \n ", "task": "t"}, "text", "empty"),
    ({"text": "Thought: x"}, "task", "missing_field"),
    ({"text": "Thought: x", "task": ["t"]}, "task", "invalid_type"),
    ({"text": "Question: only a question\n"}, "text", "empty"),
    ({"text": "Thought: x", "task": "t", "tools": "nope"}, "tools", "invalid_type"),
])
def test_errors(payload: dict, field: str, code: str) -> None:
    err = error_of("react", payload)
    assert (err["field"], err["code"]) == (field, code), err


def test_export_from_other_formats_is_best_effort() -> None:
    messages = [{"role": "system", "text": "s"}, {"role": "user", "text": "task"},
                {"role": "assistant", "text": "Thought: a\nAction: b"}, {"role": "user", "text": "Observation: c"},
                {"role": "tool", "text": "d"}]
    assert export("react", messages, None) == {"text": "Thought: a\nAction: b\nObservation: c\nObservation: d",
                                               "task": "task"}
    assert error_of_export(messages[2:3]) == "not_expressible"


def error_of_export(messages: list[dict]) -> str:
    from contract.formats import FormatError

    with pytest.raises(FormatError) as info:
        export("react", messages, None)
    return info.value.errors[0]["code"]
