"""A local stand-in for the OpenAI Chat Completions and Anthropic Messages HTTP APIs, answering in their wire
format (JSON bodies and Server-Sent Event streams, field for field as the real services send them), with
a scripted weather agent: the first turn thinks and calls ``get_weather``, the turn after the tool's
answer gives the final answer, and a request ending with an assistant prefill gets its continuation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THINKING = "The user wants the weather; I should call the tool."
FINAL = "It is 21°C in Paris."
CONTINUATION = " so the tool is the right first step."
CALL_ID = {"openai": "call_abc123", "anthropic": "toolu_01A09q90qw90lq917835lq9"}
ARGS = {"city": "Paris"}


def _phase(messages: list[dict[str, Any]], api: str) -> str:
    last = messages[-1]
    if last["role"] == "assistant":
        return "prefill"
    if api == "openai":
        return "final" if last["role"] == "tool" else "call"
    content = last.get("content")
    answered = isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
    return "final" if answered else "call"


def openai_completion(body: dict[str, Any]) -> dict[str, Any]:
    phase = _phase(body["messages"], "openai")
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if phase == "call":
        message["reasoning_content"] = THINKING  # as OpenAI-compatible reasoning servers (vLLM, DeepSeek) send it
        message["tool_calls"] = [{"id": CALL_ID["openai"], "type": "function",
                                  "function": {"name": "get_weather", "arguments": json.dumps(ARGS)}}]
    else:
        message["content"] = FINAL if phase == "final" else CONTINUATION
    return {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if phase == "call" else "stop"}],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}}


def openai_chunks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    whole = openai_completion(body)
    message, base = whole["choices"][0]["message"], {k: whole[k] for k in ("id", "created", "model")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "object": "chat.completion.chunk", "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if message.get("reasoning_content"):
        for part in (THINKING[:20], THINKING[20:]):
            yield chunk({"reasoning_content": part})
    for call in message.get("tool_calls") or []:
        yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]})
        args = call["function"]["arguments"]
        for part in (args[:5], args[5:]):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
    if message.get("content"):
        for part in (message["content"][:6], message["content"][6:]):
            yield chunk({"content": part})
    yield chunk({}, whole["choices"][0]["finish_reason"])


def anthropic_message(body: dict[str, Any]) -> dict[str, Any]:
    phase = _phase(body["messages"], "anthropic")
    if phase == "call":
        content: list[dict[str, Any]] = [
            {"type": "thinking", "thinking": THINKING, "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pk"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": CALL_ID["anthropic"], "name": "get_weather", "input": ARGS}]
    else:
        content = [{"type": "text", "text": FINAL if phase == "final" else CONTINUATION}]
    return {"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": "tool_use" if phase == "call" else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 12}}


def anthropic_events(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    whole = anthropic_message(body)
    yield "message_start", {"type": "message_start", "message": {**whole, "content": [], "stop_reason": None,
                                                                 "usage": {"input_tokens": 25, "output_tokens": 1}}}
    for i, block in enumerate(whole["content"]):
        start: dict[str, Any]
        if block["type"] == "thinking":
            start, deltas = {"type": "thinking", "thinking": "", "signature": ""}, [
                {"type": "thinking_delta", "thinking": block["thinking"][:20]},
                {"type": "thinking_delta", "thinking": block["thinking"][20:]},
                {"type": "signature_delta", "signature": block["signature"]}]
        elif block["type"] == "text":
            start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"][:4]},
                                                             {"type": "text_delta", "text": block["text"][4:]}]
        else:
            args = json.dumps(block["input"])
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": args[:5]},
                      {"type": "input_json_delta", "partial_json": args[5:]}]
        yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": start}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": whole["stop_reason"],
                                                               "stop_sequence": None}, "usage": {"output_tokens": 12}}
    yield "message_stop", {"type": "message_stop"}


class FakeLLM:
    """The fake on a free port; ``requests`` keeps every (path, body) it was sent."""

    def __init__(self) -> None:
        fake = self
        self.requests: list[tuple[str, dict[str, Any]]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body))
                if self.path == "/v1/chat/completions":
                    if body.get("stream"):
                        self._sse([(None, c) for c in openai_chunks(body)], done=True)
                    else:
                        self._json(openai_completion(body), {"x-request-id": "req_fake"})
                elif self.path == "/v1/messages":
                    if body.get("stream"):
                        self._sse(list(anthropic_events(body)), done=False)
                    else:
                        self._json(anthropic_message(body), {"request-id": "req_fake"})
                else:
                    self._json({"error": {"message": "not found"}}, {}, status=404)

            def _json(self, payload: dict[str, Any], headers: dict[str, str], status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, events: list[tuple[str | None, dict[str, Any]]], done: bool) -> None:
                frames = [(f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
                          for name, data in events]
                if done:
                    frames.append("data: [DONE]\n\n")
                data = "".join(frames).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
