// Tiny DOM helpers shared by the views.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function toast(message, kind = "info") {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), 6000);
}

export function errorText(e) {
  if (e && e.body && e.body.errors && e.body.errors.length) {
    return `${e.message} (${e.body.errors.map((x) => `${x.field || ""}: ${x.message || ""}`).join("; ")})`;
  }
  return e && e.message ? e.message : String(e);
}

export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
export const fmtNum = (x, d = 3) =>
  x === null || x === undefined ? "—" : Math.abs(x) >= 1000 ? Math.round(x).toLocaleString() : Number(x).toPrecision(d);

// The kinds: one palette (Okabe–Ito, colour-blind safe) plus a letter and an underline style per kind.
export const KINDS = ["reason", "action", "observation"];
export const LETTER = { reason: "R", action: "A", observation: "O", context: "C" };
