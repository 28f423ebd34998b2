// Span-set editing, pure functions over [{message, start, end, kind}] (code-point offsets, sorted,
// never overlapping), and the three-way merge used after a 412.
export const key = (s) => `${s.message}:${s.start}:${s.end}:${s.kind}`;
const cmp = (a, b) => a.message - b.message || a.start - b.start;
export const sorted = (spans) => [...spans].sort(cmp);
const overlaps = (a, b) => a.message === b.message && a.start < b.end && b.start < a.end;

// Add a span; the parts of other spans it covers are cut away (what lies outside is kept).
export function addSpan(spans, span) {
  const out = [];
  for (const s of spans) {
    if (!overlaps(s, span)) { out.push(s); continue; }
    if (s.start < span.start) out.push({ ...s, end: span.start });
    if (s.end > span.end) out.push({ ...s, start: span.end });
  }
  out.push({ message: span.message, start: span.start, end: span.end, kind: span.kind });
  return sorted(out);
}

export const retype = (spans, i, kind) => spans.map((s, j) => (j === i ? { ...s, kind } : s));
export const removeAt = (spans, i) => spans.filter((_, j) => j !== i);

// Move one boundary of span i to `to`, kept inside its message, off its neighbours and non-empty.
export function moveBoundary(spans, i, side, to, length) {
  const s = spans[i];
  const prev = spans[i - 1] && spans[i - 1].message === s.message ? spans[i - 1].end : 0;
  const next = spans[i + 1] && spans[i + 1].message === s.message ? spans[i + 1].start : length;
  const t = Math.round(to);
  const moved = side === "start"
    ? { ...s, start: Math.max(prev, Math.min(t, s.end - 1)) }
    : { ...s, end: Math.min(next, Math.max(t, s.start + 1)) };
  return spans.map((x, j) => (j === i ? moved : x));
}

// Which spans differ between two sets: {added, removed} (by identity of all four fields).
export function diff(a, b) {
  const ka = new Set(a.map(key));
  const kb = new Set(b.map(key));
  return { added: b.filter((s) => !ka.has(key(s))), removed: a.filter((s) => !kb.has(key(s))) };
}

// Reapply my edits (base → mine) onto their version. Spans I removed are removed from theirs when
// still there; spans I added replace whatever of theirs they overlap. `conflicts` lists their spans
// that my edits displaced although they had changed them (not in base).
export function merge3(base, mine, theirs) {
  const { added, removed } = diff(base, mine);
  const gone = new Set(removed.map(key));
  const baseKeys = new Set(base.map(key));
  let out = theirs.filter((s) => !gone.has(key(s)));
  const conflicts = [];
  for (const a of added) {
    for (const s of out) if (overlaps(s, a) && !baseKeys.has(key(s))) conflicts.push(s);
    out = addSpan(out, a);
  }
  return { spans: sorted(out), conflicts, applied: added.length + removed.length };
}

// Code points (span offsets) ↔ UTF-16 (DOM offsets).
export const cpLength = (text) => Array.from(text).length;
export const cpToUtf16 = (text, cp) => Array.from(text).slice(0, cp).join("").length;
export const utf16ToCp = (text, u) => Array.from(text.slice(0, u)).length;
