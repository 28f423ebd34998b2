// The span editor: a trajectory as a conversation with its spans marked (colour + letter badge +
// underline style per kind); select text to create a span, click or n/p to pick one, drag its
// boundary handles (or [ ] { } keys) to move it, r/a/o to set its kind, d to delete it.
import { el, LETTER, toast } from "./dom.js";
import { addSpan, retype, removeAt, moveBoundary, cpToUtf16, utf16ToCp, cpLength } from "./spans.js";

export class Editor {
  constructor(messages, spans, onChange) {
    this.messages = messages;
    this.spans = spans;
    this.onChange = onChange;
    this.selected = spans.length ? 0 : -1;
    this.pending = null; // a text selection waiting for a kind
    this.root = el("div", { class: "conversation", role: "region", "aria-label": "Conversation and spans" });
    this.status = el("p", { class: "selection", role: "status", "aria-live": "polite" });
    this.root.addEventListener("mouseup", () => this.takeSelection());
    this.root.addEventListener("click", (ev) => {
      const mark = ev.target.closest("mark[data-i]");
      if (mark && !ev.target.classList.contains("handle") && window.getSelection().isCollapsed) {
        this.select(Number(mark.dataset.i));
      }
    });
    this.root.addEventListener("pointerdown", (ev) => this.startDrag(ev));
    this.render();
  }

  setSpans(spans, { keepSelection = false } = {}) {
    this.spans = spans;
    if (!keepSelection || this.selected >= spans.length) this.selected = spans.length ? 0 : -1;
    this.render();
  }

  changed(spans, selected) {
    this.spans = spans;
    this.selected = selected;
    this.render();
    this.focusSelected();
    this.onChange(spans);
  }

  render() {
    const blocks = this.messages.map((m, i) => {
      const text = el("div", { class: "text", "data-msg": i });
      const cps = Array.from(m.text);
      let pos = 0;
      this.spans.forEach((s, j) => {
        if (s.message !== i) return;
        if (s.start > pos) text.append(el("span", { class: "ctx", "data-start": pos }, cps.slice(pos, s.start).join("")));
        const label = `${s.kind} span ${j + 1} of ${this.spans.length}, message ${i}, characters ${s.start} to ${s.end}`;
        text.append(el("mark", {
          class: `span k-${s.kind}${j === this.selected ? " selected" : ""}`, "data-i": j, "data-letter": LETTER[s.kind],
          tabindex: j === this.selected ? 0 : -1, "aria-label": label,
        },
        el("span", { class: "handle", "data-side": "start", "data-i": j, title: "Drag to move the start" }),
        el("span", { class: "t", "data-start": s.start }, cps.slice(s.start, s.end).join("")),
        el("span", { class: "handle", "data-side": "end", "data-i": j, title: "Drag to move the end" })));
        pos = s.end;
      });
      if (pos < cps.length) text.append(el("span", { class: "ctx", "data-start": pos }, cps.slice(pos).join("")));
      return el("section", { class: `msg role-${m.role}`, "aria-label": `message ${i}: ${m.role}` },
        el("h3", { class: "role" }, `${i} · ${m.role}`), text);
    });
    this.root.replaceChildren(...blocks);
    this.renderStatus();
  }

  renderStatus() {
    const s = this.spans[this.selected];
    this.status.textContent = this.pending
      ? `Selected ${this.pending.end - this.pending.start} characters in message ${this.pending.message}: press r, a or o.`
      : s ? `Span ${this.selected + 1} of ${this.spans.length}: ${s.kind}, message ${s.message}, ${s.start}–${s.end}` : "No span.";
  }

  focusSelected() {
    const mark = this.root.querySelector(`mark[data-i="${this.selected}"]`);
    if (mark) { mark.focus({ preventScroll: true }); mark.scrollIntoView({ block: "nearest" }); }
  }

  select(i) {
    if (i < 0 || i >= this.spans.length) return;
    this.selected = i;
    this.pending = null;
    this.render();
    this.focusSelected();
  }

  // A DOM point inside message text → {message, offset} in code points (null outside the text).
  pointOffset(node, offset) {
    const holder = node.nodeType === Node.TEXT_NODE ? node.parentElement : node;
    const seg = holder && holder.closest("[data-start]");
    const msg = holder && holder.closest("[data-msg]");
    if (!seg || !msg) return null;
    const base = Number(seg.dataset.start);
    const off = node.nodeType === Node.TEXT_NODE ? utf16ToCp(node.data, offset) : 0;
    return { message: Number(msg.dataset.msg), offset: base + off };
  }

  // Keeps the browser's selection visible (no redraw) until a kind is chosen for it.
  takeSelection() {
    const sel = window.getSelection();
    if (!sel || sel.isCollapsed || !sel.rangeCount) {
      if (this.pending) { this.pending = null; this.renderStatus(); }
      return;
    }
    const r = sel.getRangeAt(0);
    const a = this.pointOffset(r.startContainer, r.startOffset);
    const b = this.pointOffset(r.endContainer, r.endOffset);
    if (!a || !b) return;
    if (a.message !== b.message) { toast("Select text inside one message.", "warn"); return; }
    if (b.offset <= a.offset) return;
    this.pending = { message: a.message, start: a.offset, end: b.offset };
    this.renderStatus();
  }

  setKind(kind) {
    if (this.pending) {
      const span = { ...this.pending, kind };
      this.pending = null;
      window.getSelection().removeAllRanges();
      const spans = addSpan(this.spans, span);
      this.changed(spans, spans.findIndex((s) => s.message === span.message && s.start === span.start));
    } else if (this.selected >= 0) {
      this.changed(retype(this.spans, this.selected, kind), this.selected);
    }
  }

  deleteSelected() {
    if (this.selected < 0) return;
    this.changed(removeAt(this.spans, this.selected), Math.min(this.selected, this.spans.length - 2));
  }

  nudge(side, delta) {
    const i = this.selected;
    if (i < 0) return;
    const s = this.spans[i];
    const length = cpLength(this.messages[s.message].text);
    this.changed(moveBoundary(this.spans, i, side, s[side] + delta, length), i);
  }

  startDrag(ev) {
    const handle = ev.target.closest(".handle");
    if (!handle) return;
    ev.preventDefault();
    const i = Number(handle.dataset.i);
    const side = handle.dataset.side;
    const s = this.spans[i];
    const length = cpLength(this.messages[s.message].text);
    this.selected = i;
    let spans = this.spans;
    const move = (e) => {
      const range = document.caretRangeFromPoint(e.clientX, e.clientY);
      if (!range) return;
      const p = this.pointOffset(range.startContainer, range.startOffset);
      if (!p || p.message !== s.message) return;
      spans = moveBoundary(this.spans, i, side, p.offset, length);
      this.spans = spans;
      this.render();
    };
    const up = (e) => {
      move(e);
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      this.changed(spans, i);
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  // The text a span covers, for lists and diffs.
  snippet(s, max = 80) {
    const m = this.messages[s.message];
    if (!m) return "";
    const t = m.text.slice(cpToUtf16(m.text, s.start), cpToUtf16(m.text, s.end)).replace(/\s+/g, " ");
    return t.length > max ? `${t.slice(0, max - 1)}…` : t;
  }
}
