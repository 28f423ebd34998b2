"""Realistic request bodies shared by the API tests."""

from __future__ import annotations

import copy
from typing import Any

OPENAI: dict[str, Any] = {
    "format": "openai",
    "source": "support-agent",
    "external_id": "run-1",
    "teacher_model": "gpt-4o",
    "task": "Weather in NYC?",
    "task_type": "weather",
    "outcome": "success",
    "reward": 1.0,
    "tags": ["prod", "weather"],
    "metadata": {"latency_ms": 812},
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Weather in NYC? ☀️"},
        {"role": "assistant", "content": "I should look it up.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"NYC\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"},
        {"role": "assistant", "content": "It is 21°C in NYC."},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
}

REACT: dict[str, Any] = {
    "format": "react",
    "source": "fireact",
    "external_id": "hp-7",
    "teacher_model": "gpt-4",
    "task": "Which magazine was started first, Arthur's Magazine or First for Women?",
    "task_type": "hotpotqa",
    "outcome": "success",
    "text": (
        "Thought: I need to search both magazines.\n"
        "Action: search\n"
        "Action Input: {\"query\": \"Arthur's Magazine\"}\n"
        "Observation: Arthur's Magazine was an American literary periodical first published in 1844.\n"
        "Thought: First for Women next.\n"
        "Action: search\n"
        "Action Input: {\"query\": \"First for Women\"}\n"
        "Observation: First for Women is a woman's magazine started in 1989.\n"
        "Thought: 1844 is earlier.\n"
        "Final Answer: Arthur's Magazine"
    ),
}


def openai(external_id: str = "run-1", **overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(OPENAI)
    body["external_id"] = external_id
    body.update(overrides)
    return body


def padded_openai(external_id: str, size: int = 10_000) -> dict[str, Any]:
    """An openai trajectory of about ``size`` bytes (a long tool observation)."""
    body = openai(external_id)
    body["messages"][3]["content"] = "{\"temp_c\": 21, \"log\": \"" + ("x" * max(0, size - 1200)) + "\"}"
    return body
