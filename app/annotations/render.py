"""Human-readable views of a trajectory with its spans marked: plain text and a standalone HTML page.

Text: each message opens with a ``### [i] role`` line, then its text with every span wrapped as
``[kind]…[/kind]``; messages are separated by a blank line. The markers are not escaped, so a
message that itself contains ``[reason]`` reads ambiguously: the text view is for eyes, not parsers.

HTML: one self-contained page (inline CSS, no script, no external resource) with a legend and one
colour per kind; each span is ``<span class="k-KIND" title="span N: KIND START..END">``. Every
piece of trajectory text (messages, ids, source) is HTML-escaped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from html import escape
from typing import Any

from contract.spans import KINDS, Message, Span, SpanKind

_COLOURS = {SpanKind.REASON: "#fde68a", SpanKind.ACTION: "#bfdbfe", SpanKind.OBSERVATION: "#bbf7d0"}


def _by_message(spans: Sequence[Span]) -> dict[int, list[tuple[int, Span]]]:
    out: dict[int, list[tuple[int, Span]]] = defaultdict(list)
    for n, s in enumerate(spans):
        out[s["message"]].append((n, s))
    return out


def _pieces(text: str, spans: list[tuple[int, Span]]) -> list[tuple[str, tuple[int, Span] | None]]:
    """The message text cut into (piece, span or None for uncovered context)."""
    out: list[tuple[str, tuple[int, Span] | None]] = []
    pos = 0
    for n, s in sorted(spans, key=lambda x: x[1]["start"]):
        if s["start"] > pos:
            out.append((text[pos:s["start"]], None))
        out.append((text[s["start"]:s["end"]], (n, s)))
        pos = s["end"]
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def render_text(messages: Sequence[Message], spans: Sequence[Span]) -> str:
    by_message = _by_message(spans)
    blocks = []
    for i, m in enumerate(messages):
        body = "".join(piece if tagged is None else f"[{tagged[1]['kind']}]{piece}[/{tagged[1]['kind']}]"
                       for piece, tagged in _pieces(m["text"], by_message.get(i, [])))
        blocks.append(f"### [{i}] {m['role']}\n{body}")
    return "\n\n".join(blocks) + "\n"


_CSS = """
body { font: 14px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #111; }
header p { color: #555; }
.legend { list-style: none; padding: 0; display: flex; gap: 1rem; }
.legend li span { padding: 0 .4rem; border-radius: 3px; }
section { border: 1px solid #ddd; border-radius: 6px; margin: 1rem 0; }
section h2 { font-size: .85rem; margin: 0; padding: .3rem .6rem; background: #f5f5f5; }
pre { margin: 0; padding: .6rem; white-space: pre-wrap; word-break: break-word; font: 13px/1.5 monospace; }
""" + "".join(f".k-{k} {{ background: {c}; }}\n" for k, c in _COLOURS.items())


def render_html(meta: dict[str, Any], messages: Sequence[Message], spans: Sequence[Span], revision: int) -> str:
    """``meta``: id, source, format, status (shown in the header)."""
    by_message = _by_message(spans)
    sections = []
    for i, m in enumerate(messages):
        parts = []
        for piece, tagged in _pieces(m["text"], by_message.get(i, [])):
            if tagged is None:
                parts.append(escape(piece))
            else:
                n, s = tagged
                title = f"span {n}: {s['kind']} {s['start']}..{s['end']}"
                parts.append(f'<span class="k-{escape(s["kind"])}" title="{escape(title)}">{escape(piece)}</span>')
        sections.append(f'<section id="m{i}"><h2>[{i}] {escape(str(m["role"]))}</h2>'
                        f'<pre>{"".join(parts)}</pre></section>')
    legend = "".join(f'<li><span class="k-{k}">{k}</span></li>' for k in KINDS)
    title = escape(f"Trajectory {meta['id']} · revision {revision}")
    info = escape(f"source {meta['source']} · format {meta['format']} · status {meta['status']} · "
                  f"{len(spans)} spans")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head>\n<body><header><h1>{title}</h1><p>{info}</p>"
        f'<ul class="legend">{legend}</ul></header>\n<main>\n' + "\n".join(sections) + "\n</main></body></html>\n"
    )
