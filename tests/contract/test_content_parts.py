"""The one content reader (`contract.formats.base.content_text` / `observation_content`) as each format
uses it: which part types hold text, how parts join, what is sanitized and counted, and the exact
errors (field, code, message) for what is refused, per format."""

from __future__ import annotations

from typing import Any

import pytest

from contract.formats import FormatError, parse

ANTHROPIC_CALL = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}
BLOCKS_REFUSED = ("blocks of type {!r} are not supported here "
                  "(images, documents and server-tool blocks are refused)")
ITEMS_REFUSED = "type {!r} is not supported (images, files and hosted tools are refused)"


def anthropic_result(content: Any) -> tuple[str, dict[str, Any]]:
    return "anthropic", {"messages": [ANTHROPIC_CALL, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": content}]}]}


def responses_output(output: Any) -> tuple[str, dict[str, Any]]:
    return "openai-responses", {"input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                                          {"type": "function_call_output", "call_id": "c1", "output": output}]}


def openai_tool(content: Any) -> tuple[str, dict[str, Any]]:
    return "openai", {"messages": [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": content}]}


@pytest.mark.parametrize(("case", "text", "sanitized"), [
    (anthropic_result([{"type": "text", "text": "a\x00"}, {"type": "text", "text": "\ud800b"}]), "a\ufffd\n\ufffdb", 2),
    (anthropic_result(None), "", 0),
    (responses_output([{"type": "input_text", "text": "a"}, {"type": "output_text", "text": "b\x00"}]),
     "a\nb\ufffd", 1),
    (responses_output("x\x00\x00"), "x\ufffd\ufffd", 2),
    (responses_output(None), "", 0),
    (openai_tool([{"type": "text", "text": "a"}, {"type": "text", "text": "\udfff"}]), "a\n\ufffd", 1),
])
def test_tool_output_parts_join_and_are_sanitized(case: tuple[str, dict[str, Any]], text: str,
                                                  sanitized: int) -> None:
    parsed = parse(*case)
    assert parsed.messages[-1]["role"] == "tool" and parsed.messages[-1]["text"] == text
    assert parsed.sanitized == sanitized


@pytest.mark.parametrize(("case", "field", "code", "message"), [
    (anthropic_result([{"type": "image", "source": {}}]), "messages[1].content[0].content[0].type",
     "unsupported_content", BLOCKS_REFUSED.format("image")),
    (anthropic_result([{"type": "input_text", "text": "a"}]), "messages[1].content[0].content[0].type",
     "unsupported_content", BLOCKS_REFUSED.format("input_text")),
    (anthropic_result(7), "messages[1].content[0].content", "invalid_type",
     "must be a string or an array of text blocks, got integer"),
    (anthropic_result([{"type": "text"}]), "messages[1].content[0].content[0].text", "missing_field", "is required"),
    (anthropic_result(["x"]), "messages[1].content[0].content[0]", "invalid_type", "must be an object, got string"),
    (("anthropic", {"system": [{"type": "document"}], "messages": [{"role": "user", "content": "q"}]}),
     "system[0].type", "unsupported_content", BLOCKS_REFUSED.format("document")),
    (("anthropic", {"system": [{"type": "text", "text": "a\x00"}], "messages": [{"role": "user", "content": "q"}]}),
     "system[0].text", "invalid_character", "contains U+0000 (NUL) at offset 1, which cannot be stored"),
    (responses_output([{"type": "input_image", "image_url": "u"}]), "input[1].output[0].type",
     "unsupported_content", ITEMS_REFUSED.format("input_image")),
    (responses_output([{"type": "text", "text": "a"}]), "input[1].output[0].type",
     "unsupported_content", ITEMS_REFUSED.format("text")),
    (responses_output({"text": "a"}), "input[1].output", "invalid_type",
     "must be a string or an array of content parts, got object"),
    (responses_output([{"type": "output_text", "text": 3}]), "input[1].output[0].text", "invalid_type",
     "must be a string, got integer"),
    (openai_tool([{"type": "image_url", "image_url": {}}]), "messages[1].content[0].type", "unsupported_content",
     "only text parts are supported, got type 'image_url'"),
    (openai_tool(True), "messages[1].content", "invalid_type",
     "must be a string, null or an array of text parts, got boolean"),
])
def test_refused_content_names_the_field(case: tuple[str, dict[str, Any]], field: str, code: str,
                                         message: str) -> None:
    with pytest.raises(FormatError) as exc:
        parse(*case)
    assert exc.value.errors == [{"field": field, "code": code, "message": message}]
