// The revision history of a trajectory and the diff between two revisions.
import { get } from "./api.js";
import { el, fmtTime, errorText } from "./dom.js";

export async function showHistory(box, tid, editor) {
  box.replaceChildren(el("h2", { text: "Revision history" }));
  let page;
  try { page = await get(`/v1/trajectories/${tid}/revisions?limit=1000`); } catch (e) {
    box.append(el("p", { class: "error", text: errorText(e) }));
    return;
  }
  const out = el("div", { class: "diff", "aria-live": "polite" });
  const rows = page.items.map((r) => el("tr", {},
    el("td", { text: r.revision }), el("td", { text: r.source }), el("td", { text: r.author_key_id || "—" }),
    el("td", { text: r.reason || "" }), el("td", { text: fmtTime(r.created_at) }), el("td", { text: r.n_spans }),
    el("td", {}, r.revision > 1
      ? el("button", { type: "button", "data-diff": r.revision, "aria-label": `Diff revision ${r.revision - 1} to ${r.revision}`,
        onclick: () => showDiff(out, tid, r.revision - 1, r.revision, editor) }, `diff ${r.revision - 1}→${r.revision}`)
      : "")));
  box.append(el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["rev", "source", "author", "reason", "at", "spans", ""].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows)), out);
  if (page.items.length > 1) {
    const last = page.items[page.items.length - 1].revision;
    await showDiff(out, tid, 1, last, editor);
  }
}

async function showDiff(out, tid, from, to, editor) {
  out.replaceChildren(el("h3", { text: `Changes from revision ${from} to ${to}` }));
  const d = await get(`/v1/trajectories/${tid}/revisions/diff?from=${from}&to=${to}`);
  const line = (cls, sign, s, extra = "") => el("li", { class: cls },
    el("span", { class: "sign", "aria-hidden": "true" }, sign),
    el("span", { class: `kind k-${s.kind}`, "data-letter": s.kind[0].toUpperCase() }, s.kind),
    ` m${s.message} ${s.start}–${s.end} ${extra}`, el("q", {}, editor.snippet(s, 60)));
  const items = [
    ...d.removed.map((x) => line("removed", "−", x.span, "removed")),
    ...d.added.map((x) => line("added", "+", x.span, "added")),
    ...d.changed.map((c) => line("changed", "~", c.after,
      `(${c.fields.join(", ")}; was ${c.before.kind} ${c.before.start}–${c.before.end})`)),
  ];
  out.append(el("p", { text: `${d.added.length} added, ${d.removed.length} removed, ${d.changed.length} changed, ${d.unchanged} unchanged` }),
    el("ul", { class: "difflist" }, items));
}
