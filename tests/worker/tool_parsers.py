"""Tool-call parsers written from each family's documented format, independent of the worker's code: what a
serving stack's tool parser reads out of a model's assistant text.

- ``hermes`` (Qwen2.5/Qwen3, and the canonical/fallback form; vLLM ``--tool-call-parser hermes``): each call is
  ``<tool_call>`` + a JSON object ``{"name": …, "arguments": {…}}`` + ``</tool_call>``.
- ``llama3_json`` (Llama 3.1/3.2 JSON tool calling; vLLM ``llama3_json``): the turn is a bare JSON object
  ``{"name": …, "parameters": {…}}``, optionally after ``<|python_tag|>``; several are separated by ``;``.
- ``deepseek_r1`` (DeepSeek-R1/V3 template; vLLM ``deepseek_v3``): ``<｜tool▁calls▁begin｜>`` then per call
  ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```<｜tool▁call▁end｜>``.

Each returns ``[(name, arguments, start, end)]``: the call and its block's character range in the text, delimiters
included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

ParsedCall = tuple[str, Any, int, int]

_HERMES = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_R1 = re.compile(r"<｜tool▁call▁begin｜>function<｜tool▁sep｜>([^\n]+)\n```json\n(.*?)\n```<｜tool▁call▁end｜>",
                 re.DOTALL)


def hermes(text: str) -> list[ParsedCall]:
    out = []
    for m in _HERMES.finditer(text):
        obj = json.loads(m.group(1))
        out.append((obj["name"], obj.get("arguments", {}), m.start(), m.end()))
    return out


def llama3_json(text: str) -> list[ParsedCall]:
    pos = 0
    if text.startswith("<|python_tag|>"):
        pos = len("<|python_tag|>")
    decoder = json.JSONDecoder()
    out = []
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ";"):
            pos += 1
        if pos >= len(text) or text[pos] != "{":
            break
        obj, end = decoder.raw_decode(text, pos)
        if not isinstance(obj, dict) or "name" not in obj:
            break
        out.append((obj["name"], obj.get("parameters", obj.get("arguments", {})), pos, end))
        pos = end
    return out


def deepseek_r1(text: str) -> list[ParsedCall]:
    return [(m.group(1), json.loads(m.group(2)), m.start(), m.end()) for m in _R1.finditer(text)]


PARSERS: dict[str, Callable[[str], list[ParsedCall]]] = {
    "hermes": hermes, "llama3_json": llama3_json, "deepseek_r1": deepseek_r1,
}
