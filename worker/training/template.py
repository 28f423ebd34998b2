"""Where a chat template puts things: each message's text in the rendered string, what ends an assistant turn,
and the prompt the model sees at inference (DESIGN §5 "Rendering").

**Locating texts.** The conversation is rendered once with the real texts and once with placeholders; when
the template treats content uniformly the placeholder render gives every text's exact position. Otherwise each
text is searched in order, verbatim first, then whitespace-tolerant: every non-space character must appear in
order, runs of whitespace may differ (templates that ``trim`` content, Qwen3's ``</think>\\n\\n``). A text
that cannot be found either way — the template dropped or rewrote it (R1-style templates drop ``<think>``,
Llama 3.1 JSON-encodes tool output) — is left unplaced; the renderer decides what that means.

**End of turn.** The end-of-turn of an assistant message is the run of special tokens the template puts right
after its content (whitespace before and between them joins it), up to the first special that *opens* a turn:
``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``</s>``, Cohere 2's ``<|END_RESPONSE|><|END_OF_TURN_TOKEN|>``.
It is read once per template from a probe conversation that starts with a system message (user-first when the
template refuses system turns), after a mid-conversation assistant turn; every assistant turn then gets exactly
that run (a last turn's extra specials, such as Phi's eos after ``<|end|>``, are never generated and stay
context). The openers are every special before the probe's first content, and the special nearest before each
other content unless it also directly follows an assistant content. A probe is used, not the conversation at
hand, because a template that injects a default system turn when the conversation starts with a user turn
(Qwen2.5, SmolLM2) puts that turn's closing special into the header. The rule needs no eos: Qwen2.5 base
checkpoints declare ``<|endoftext|>`` as eos while ``<|im_end|>`` ends their turns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class RenderError(ValueError):
    """The trajectory cannot be rendered faithfully (template error, bad spans, no eos for the plain template)."""


@dataclass(frozen=True)
class Placement:
    """Where one message's text sits in a rendered string. ``bounds`` (None = verbatim) maps every text offset
    0..len(text) to a rendered offset; collapsed whitespace maps to the end of the rendered run."""

    start: int
    length: int
    bounds: np.ndarray | None = None

    def at(self, offset: int) -> int:
        return self.start + offset if self.bounds is None else int(self.bounds[offset])

    @property
    def end(self) -> int:
        return self.at(self.length)


@dataclass
class Layout:
    """A rendered conversation: each message's placement (None = not found) and end-of-turn char range."""

    text: str
    placed: list[Placement | None]
    eot: list[tuple[int, int] | None]


@dataclass(frozen=True)
class TemplateInfo:
    """What a template's probe says: the specials that open turns and the end-of-turn text after assistant
    content (leading whitespace included; None when the template closes assistant turns with no special)."""

    openers: frozenset[str] | None  # None: the probe failed; the conversation's own first header decides
    eot_text: str | None
    specials: re.Pattern[str] | None  # alternation of the tokenizer's special tokens, longest first


PLAIN_TEMPLATE_DOC = """Built-in plain template, used when the tokenizer has no chat template:
    [bos]                                   (when the tokenizer has a bos token)
    "<|tools|>\\n" + json(tools) + "\\n"      (when tools are given)
    per message: "<|" + role + "|>\\n" + text + (eos if role == "assistant") + "\\n"
The text appears verbatim and the eos token closes every assistant turn (its end-of-turn token)."""

_INFO_CACHE: dict[tuple[Any, ...], TemplateInfo] = {}


def special_strings(tokenizer: Any) -> list[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            specials.add(str(added))
    return sorted((s for s in specials if s), key=len, reverse=True)


def template_messages(messages: Sequence[Mapping[str, Any]],
                      texts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The messages as a chat template takes them: ``{role, content}`` (+ a tool message's ``tool_call_id``
    and ``name``). Tool calls stay inside the text (the trained form), never passed as structure."""
    out = []
    for i, m in enumerate(messages):
        item: dict[str, Any] = {"role": m["role"], "content": m["text"] if texts is None else texts[i]}
        if m["role"] == "tool":
            item.update({k: m[k] for k in ("tool_call_id", "name") if m.get(k)})
        out.append(item)
    return out


def apply_template(tokenizer: Any, conv: list[dict[str, Any]], tools: Any, *, generation_prompt: bool = False) -> str:
    try:
        out = tokenizer.apply_chat_template(conv, tools=tools or None, tokenize=False,
                                            add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja errors (e.g. templates requiring role alternation)
        raise RenderError(f"the chat template failed to render this trajectory: {exc}") from exc
    return out if isinstance(out, str) else str(out)


def _marks(n: int) -> list[str]:
    return [f"\ue000{i}\ue001" for i in range(n)]


def _specials_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    specials = special_strings(tokenizer)
    return re.compile("|".join(re.escape(s) for s in specials)) if specials else None


def _eot_after(text: str, end: int, limit: int, pattern: re.Pattern[str] | None,
               openers: frozenset[str]) -> tuple[int, int] | None:
    """The char range from `end` through the run of specials that follows it (whitespace allowed before and
    between them) up to the first special that opens a turn; None when no closing special follows."""
    if pattern is None:
        return None
    pos, stop = end, None
    while True:
        while pos < limit and text[pos].isspace():
            pos += 1
        found = pattern.match(text, pos)
        if found is None or found.end() > limit or found.group() in openers:
            break
        pos = stop = found.end()
    return None if stop is None else (end, stop)


def _openers(header: str, pattern: re.Pattern[str] | None, eos: str | None) -> frozenset[str]:
    found = {m.group() for m in pattern.finditer(header)} if pattern is not None else set()
    return frozenset(found - {eos})


def _probe_openers(skeleton: str, at: list[int], ends: list[int], roles: list[str], pattern: re.Pattern[str] | None,
                   eos: str | None) -> frozenset[str]:
    """Specials that open turns: all of those before the first content, and the special nearest before each
    other content (``<|user|>``, ``<|im_start|>``, ``[/INST]``) unless it also directly follows an assistant
    content (OpenChat's ``<|end_of_turn|>`` ends a turn and also sits right before the next content)."""
    openers = set(_openers(skeleton[: min(at)], pattern, eos))
    if pattern is not None:
        nearest, closers = set(), set()
        for start, end, role in zip(at, ends, roles, strict=True):
            before = list(pattern.finditer(skeleton, 0, start))
            if before:
                nearest.add(before[-1].group())
            pos = end
            while pos < len(skeleton) and skeleton[pos].isspace():
                pos += 1
            after = pattern.match(skeleton, pos)
            if after is not None and role == "assistant":
                closers.add(after.group())
        openers |= nearest - closers
    return frozenset(openers - {eos})


def template_info(tokenizer: Any) -> TemplateInfo:
    """Probe the tokenizer's chat template once (cached on the template and the special tokens)."""
    pattern = _specials_pattern(tokenizer)
    key = (tokenizer.chat_template, pattern.pattern if pattern else None, tokenizer.eos_token, tokenizer.bos_token)
    info = _INFO_CACHE.get(key)
    if info is not None:
        return info
    info = TemplateInfo(None, None, pattern)
    for roles in (["system", "user", "assistant", "user", "assistant"], ["user", "assistant", "user", "assistant"]):
        marks = _marks(len(roles))
        try:
            skeleton = apply_template(tokenizer, [{"role": r, "content": m} for r, m in zip(roles, marks, strict=True)],
                                      None)
        except RenderError:
            continue
        at = [skeleton.find(m) for m in marks]
        if min(at) < 0:  # the template drops a role (some Phi-3 templates drop system turns)
            continue
        ends = [a + len(m) for a, m in zip(at, marks, strict=True)]
        openers = _probe_openers(skeleton, at, ends, roles, pattern, tokenizer.eos_token)
        eot_text = None
        for i in (i for i, r in enumerate(roles) if r == "assistant"):  # mid-conversation first
            end = at[i] + len(marks[i])
            found = _eot_after(skeleton, end, len(skeleton), pattern, openers)
            if found is not None:
                eot_text = skeleton[found[0] : found[1]]
                break
        info = TemplateInfo(openers, eot_text, pattern)
        break
    if len(_INFO_CACHE) > 64:
        _INFO_CACHE.clear()
    _INFO_CACHE[key] = info
    return info


def plain_layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> Layout:
    eos = tokenizer.eos_token
    if not eos:
        raise RenderError("the plain template needs an eos token to close assistant turns")
    parts: list[str] = [tokenizer.bos_token or ""]
    if tools:
        parts.append("<|tools|>\n" + json.dumps(tools, ensure_ascii=False) + "\n")
    pos = sum(len(p) for p in parts)
    placed: list[Placement | None] = []
    eot: list[tuple[int, int] | None] = []
    for m in messages:
        header = "<|" + str(m["role"]) + "|>\n"
        placed.append(Placement(pos + len(header), len(m["text"])))
        end = pos + len(header) + len(m["text"])
        closing = eos if m["role"] == "assistant" else ""
        eot.append((end, end + len(eos)) if closing else None)
        chunk = header + m["text"] + closing + "\n"
        parts.append(chunk)
        pos += len(chunk)
    return Layout("".join(parts), placed, eot)


def plain_prompt(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> str:
    """The plain template's prompt for the next assistant turn (the assistant header last)."""
    return plain_layout(messages, tokenizer, tools).text + "<|assistant|>\n"


def whitespace_tolerant(text: str, rendered: str, cursor: int) -> Placement | None:
    """Find `text` from `cursor` with whitespace runs free to differ (and leading/trailing ones dropped)."""
    core = text.strip()
    if not core:
        return None
    pieces = re.split(r"(\s+)", core)
    pattern = "".join(r"\s*" if i % 2 else re.escape(p) for i, p in enumerate(pieces))
    found = re.compile(pattern).search(rendered, cursor)
    if found is None:
        return None
    bounds = np.empty(len(text) + 1, dtype=np.int64)
    lead = len(text) - len(text.lstrip())
    core_end = lead + len(core)
    bounds[: lead + 1] = found.start()
    i, j = lead, found.start()
    while i < core_end:
        if text[i].isspace():
            i2, j2 = i, j
            while i2 < core_end and text[i2].isspace():
                i2 += 1
            while j2 < len(rendered) and rendered[j2].isspace():
                j2 += 1
            bounds[i:i2] = np.minimum(np.arange(j, j + i2 - i), j2)
            i, j = i2, j2
        else:
            bounds[i] = j
            i, j = i + 1, j + 1
    bounds[core_end:] = j
    return Placement(found.start(), len(text), bounds)


def _place_in_order(texts: Sequence[str], rendered: str) -> list[Placement | None]:
    placed: list[Placement | None] = []
    cursor = 0
    for text in texts:
        at = rendered.find(text, cursor)
        found = Placement(at, len(text)) if at >= 0 else whitespace_tolerant(text, rendered, cursor)
        placed.append(found)
        if found is not None:
            cursor = found.end
    return placed


def template_layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> Layout:
    texts = [m["text"] for m in messages]
    rendered = apply_template(tokenizer, template_messages(messages), tools)
    # The placeholder render places every text exactly, even one that also occurs in template markup (an
    # assistant text "a" inside the "assistant" header), as long as the template treats content uniformly.
    marks = _marks(len(messages))
    skeleton = apply_template(tokenizer, template_messages(messages, marks), tools)
    placed: list[Placement | None] = []
    pieces: list[str] = []
    cursor = shift = 0
    for mark, text in zip(marks, texts, strict=True):
        at = skeleton.find(mark, cursor)
        if at < 0:
            break
        pieces += [skeleton[cursor:at], text]
        placed.append(Placement(at + shift, len(text)))
        shift += len(text) - len(mark)
        cursor = at + len(mark)
    if len(placed) != len(texts) or "".join(pieces) + skeleton[cursor:] != rendered:
        placed = _place_in_order(texts, rendered)
    return Layout(rendered, placed, assistant_eots(messages, placed, rendered, tokenizer))


def assistant_eots(messages: Sequence[Mapping[str, Any]], placed: Sequence[Placement | None], rendered: str,
                   tokenizer: Any) -> list[tuple[int, int] | None]:
    """The end-of-turn char range after each placed assistant message of a rendered conversation (else None)."""
    info = template_info(tokenizer)
    openers = info.openers
    if openers is None:  # no probe rendered: the specials of this conversation's first header open turns
        first = min((p.start for p in placed if p is not None), default=0)
        openers = _openers(rendered[:first], info.specials, tokenizer.eos_token)
    eot: list[tuple[int, int] | None] = []
    for i, (m, p) in enumerate(zip(messages, placed, strict=True)):
        if m["role"] != "assistant" or p is None:
            eot.append(None)
            continue
        limit = max(p.end, next((q.start for q in placed[i + 1 :] if q is not None), len(rendered)))
        eot.append(_eot_at(rendered, p.end, limit, info, openers))
    return eot


def _eot_at(text: str, end: int, limit: int, info: TemplateInfo, openers: frozenset[str]) -> tuple[int, int] | None:
    """The end of turn after an assistant content ending at `end`. When the probe found the template's
    mid-conversation end of turn, exactly that (so a last turn's extra specials, e.g. Phi's eos after
    ``<|end|>``, which the model never generates mid-conversation, stay context); else the run rule."""
    if info.eot_text is None:
        return _eot_after(text, end, limit, info.specials, openers)
    core = info.eot_text.lstrip()
    pos = end
    while pos < limit and text[pos].isspace():
        pos += 1
    return (end, pos + len(core)) if text.startswith(core, pos) and pos + len(core) <= limit else None


def conversation_layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> Layout:
    if getattr(tokenizer, "chat_template", None):
        return template_layout(messages, tokenizer, tools)
    return plain_layout(messages, tokenizer, tools)


def generation_prompt(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> tuple[str, str]:
    """(prompt, generation suffix): the string the model is given before it writes the next assistant turn,
    and the part the generation prompt adds (e.g. ``<|im_start|>assistant\\n``, or R1's ``…<think>\\n``)."""
    if not getattr(tokenizer, "chat_template", None):
        prompt = plain_prompt(messages, tokenizer, tools)
        return prompt, "<|assistant|>\n"
    conv = template_messages(messages)
    prompt = apply_template(tokenizer, conv, tools, generation_prompt=True)
    bare = apply_template(tokenizer, conv, tools) if conv else ""
    return prompt, prompt[len(bare) :] if prompt.startswith(bare) else ""
