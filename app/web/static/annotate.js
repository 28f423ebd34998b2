// Annotate: claim from the queue (lease shown, extended while the page is in use, released on leave),
// edit the spans, save with If-Match (a 412 shows the other version and offers merge or reload),
// approve / reject / reopen, and read the revision history.
import { call, get, headers } from "./api.js";
import { el, toast, errorText, fmtTime } from "./dom.js";
import { Editor } from "./editor.js";
import { merge3, diff } from "./spans.js";
import { showHistory } from "./history.js";
import { showTraining } from "./training.js";

const TRANSITIONS = { pending: ["approve", "reject"], in_review: ["approve", "reject"], approved: ["reopen"], rejected: ["reopen"] };
const EXTEND_EVERY_MS = 60_000;
const ACTIVE_WITHIN_MS = 5 * 60_000;
let session = null; // the open editor session: {tid, lease, timers, ...}

const SHORTCUTS = [
  ["r / a / o", "kind of the selected text or span: reason, action, observation"],
  ["n / p", "next / previous span"], ["[ / ]", "move the start left / right"],
  ["{ / }", "move the end left / right"], ["d", "delete the span"], ["s", "save"],
  ["Shift+A", "approve"], ["Shift+X", "reject"], ["h", "revision history"], ["t", "training view (tokens)"],
];

export async function showAnnotate(root) {
  const claimBtn = el("button", { type: "button", id: "claim", class: "primary" }, "Claim next trajectory");
  const box = el("div", { id: "editor-box" });
  root.append(el("section", { class: "card queue" }, el("h1", { text: "Annotation queue" }),
    el("p", { text: "Claim the oldest pending trajectory nobody holds; it stays yours while this page is open." }),
    claimBtn), box);
  claimBtn.addEventListener("click", () => claim(box));
}

async function claim(box) {
  await leaveAnnotate();
  let r;
  try { r = await call("POST", "/v1/annotation-queue/claim", { body: { lease_seconds: 300 } }); } catch (e) {
    toast(errorText(e), "error");
    return;
  }
  if (r.status === 204) { box.replaceChildren(el("p", { role: "status", text: "The queue is empty." })); return; }
  await openEditor(box, r.data.trajectory.id, r.data.lease);
}

export async function showTrajectory(root, tid) {
  const box = el("div", { id: "editor-box" });
  root.append(box);
  await openEditor(box, tid, null);
}

async function openEditor(box, tid, lease) {
  const [traj, spans] = await Promise.all([get(`/v1/trajectories/${tid}`), call("GET", `/v1/trajectories/${tid}/spans`)]);
  const s = { tid, lease, status: traj.status, etag: spans.etag, base: spans.data.spans, dirty: false,
    lastActive: Date.now(), timers: [], listeners: [] };
  session = s;
  const dirtyMark = el("span", { class: "dirty", role: "status" });
  s.editor = new Editor(traj.messages, spans.data.spans, () => { s.dirty = true; dirtyMark.textContent = "unsaved changes"; });
  s.dirtyMark = dirtyMark;
  s.meta = el("span", { class: "meta" });
  s.leaseBox = el("span", { class: "lease", role: "timer", "aria-live": "off" });
  s.conflict = el("section", { class: "conflict", hidden: true, role: "alert" });
  s.history = el("section", { class: "history card", hidden: true });
  s.training = el("section", { class: "training", hidden: true, "aria-label": "Training view" });
  s.reviewBtns = el("span", { class: "review" });
  const kindBtn = (k, letter) => el("button", { type: "button", class: `kindbtn k-${k}`, "data-letter": letter,
    "aria-keyshortcuts": letter.toLowerCase(), onclick: () => s.editor.setKind(k) }, k);
  const bar = el("div", { class: "toolbar", role: "toolbar", "aria-label": "Span tools" },
    kindBtn("reason", "R"), kindBtn("action", "A"), kindBtn("observation", "O"),
    el("button", { type: "button", "aria-keyshortcuts": "d", onclick: () => s.editor.deleteSelected() }, "Delete span"),
    el("button", { type: "button", id: "save", class: "primary", "aria-keyshortcuts": "s", onclick: () => save(s) }, "Save"),
    s.reviewBtns, dirtyMark);
  const help = el("aside", { class: "help", "aria-label": "Keyboard shortcuts" }, el("h2", { text: "Keys" }),
    el("dl", {}, SHORTCUTS.flatMap(([k, v]) => [el("dt", {}, el("kbd", {}, k)), el("dd", { text: v })])));
  box.replaceChildren(el("section", { class: "card head" },
    el("h1", {}, "Trajectory ", el("code", { text: tid })),
    el("p", {}, s.meta, " ", s.leaseBox, " ",
      el("button", { type: "button", "aria-keyshortcuts": "t", onclick: () => toggleTraining(s) }, "Training view"), " ",
      el("button", { type: "button", "aria-keyshortcuts": "h", onclick: () => toggleHistory(s) }, "History"),
      lease ? el("button", { type: "button", onclick: () => release(s, "released") }, "Release") : ""),
    bar, s.editor.status), s.conflict,
  el("div", { class: "work" }, s.editor.root, help), s.history, s.training);
  renderMeta(s);
  s.editor.focusSelected();
  const onKey = (ev) => keydown(s, ev);
  const active = () => { s.lastActive = Date.now(); };
  const onHide = () => { if (s.lease) releaseNow(s.lease.lease_id); };
  document.addEventListener("keydown", onKey);
  ["pointerdown", "keydown"].forEach((t) => document.addEventListener(t, active));
  window.addEventListener("pagehide", onHide);
  s.listeners.push(() => document.removeEventListener("keydown", onKey),
    () => ["pointerdown", "keydown"].forEach((t) => document.removeEventListener(t, active)),
    () => window.removeEventListener("pagehide", onHide));
  if (lease) {
    s.timers.push(setInterval(() => renderLease(s), 1000));
    s.timers.push(setInterval(() => extend(s), EXTEND_EVERY_MS));
    renderLease(s);
  }
}

function renderMeta(s) {
  s.meta.textContent = `status ${s.status} · revision ${s.etag}`;
  s.meta.dataset.status = s.status;
  s.reviewBtns.replaceChildren(...(TRANSITIONS[s.status] || []).map((a) => el("button", {
    type: "button", id: `review-${a}`, onclick: () => review(s, a),
    "aria-keyshortcuts": a === "approve" ? "Shift+A" : a === "reject" ? "Shift+X" : undefined,
  }, a === "reopen" ? "Reopen (needs changes)" : a[0].toUpperCase() + a.slice(1))));
}

function renderLease(s) {
  if (!s.lease) { s.leaseBox.textContent = ""; return; }
  const left = Math.round((new Date(s.lease.expires_at) - Date.now()) / 1000);
  s.leaseBox.textContent = left > 0 ? `lease ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left`
    : "lease expired: claim again before saving";
  s.leaseBox.classList.toggle("expired", left <= 0);
}

async function extend(s) {
  if (!s.lease || document.visibilityState !== "visible" || Date.now() - s.lastActive > ACTIVE_WITHIN_MS) return;
  try {
    s.lease = (await call("POST", `/v1/annotation-queue/${s.lease.lease_id}/extend`, { body: { lease_seconds: 300 } })).data;
  } catch (e) { toast(`Lease not extended: ${errorText(e)}`, "warn"); }
}

function releaseNow(leaseId) {
  // keepalive: the request outlives the page (pagehide, closing the tab)
  fetch(`/v1/annotation-queue/${leaseId}/release`, { method: "POST", keepalive: true, headers: headers() });
}

async function release(s, how) {
  if (!s.lease) return;
  const id = s.lease.lease_id;
  s.lease = null;
  renderLease(s);
  try { await call("POST", `/v1/annotation-queue/${id}/${how === "completed" ? "complete" : "release"}`); } catch { /* ended already */ }
  if (how === "released") toast("Released to the queue.");
}

export async function leaveAnnotate() {
  const s = session;
  session = null;
  if (!s) return;
  s.timers.forEach(clearInterval);
  s.listeners.forEach((f) => f());
  await release(s, "released");
}

function keydown(s, ev) {
  if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const ed = s.editor;
  const map = {
    r: () => ed.setKind("reason"), a: () => ed.setKind("action"), o: () => ed.setKind("observation"),
    n: () => ed.select(ed.selected + 1), p: () => ed.select(ed.selected - 1), d: () => ed.deleteSelected(),
    Delete: () => ed.deleteSelected(), "[": () => ed.nudge("start", -1), "]": () => ed.nudge("start", 1),
    "{": () => ed.nudge("end", -1), "}": () => ed.nudge("end", 1), s: () => save(s), h: () => toggleHistory(s),
    t: () => toggleTraining(s),
    A: () => review(s, "approve"), X: () => review(s, "reject"),
  };
  const f = map[ev.key];
  if (f) { ev.preventDefault(); f(); }
}

async function save(s) {
  try {
    const r = await call("PUT", `/v1/trajectories/${s.tid}/spans`, { body: { spans: s.editor.spans }, ifMatch: s.etag });
    s.etag = r.data.revision;
    s.base = r.data.spans;
    s.dirty = false;
    s.dirtyMark.textContent = "";
    s.conflict.hidden = true;
    renderMeta(s);
    toast(r.data.created ? `Saved as revision ${s.etag}.` : "Nothing changed.");
  } catch (e) {
    if (e.status === 412) return showConflict(s);
    toast(errorText(e), "error");
  }
}

// 412: someone saved meanwhile. Show their change; offer merge (my edits onto theirs) or reload.
async function showConflict(s) {
  const theirs = await call("GET", `/v1/trajectories/${s.tid}/spans`);
  const t = theirs.data;
  const ed = s.editor;
  const list = (title, d) => el("div", {}, el("h3", { text: title }), el("ul", { class: "difflist" },
    ...d.removed.map((x) => el("li", { class: "removed" }, `− ${x.kind} m${x.message} ${x.start}–${x.end} `, el("q", {}, ed.snippet(x, 50)))),
    ...d.added.map((x) => el("li", { class: "added" }, `+ ${x.kind} m${x.message} ${x.start}–${x.end} `, el("q", {}, ed.snippet(x, 50))))));
  s.conflict.replaceChildren(
    el("h2", { text: `Revision ${t.revision} was saved by someone else while you edited revision ${s.etag}` }),
    el("p", { text: `By key ${t.author_key_id || "?"} at ${fmtTime(t.created_at)}${t.reason ? `: ${t.reason}` : ""}. Nothing was overwritten.` }),
    el("div", { class: "cols" }, list("Their change", diff(s.base, t.spans)), list("Your edits", diff(s.base, ed.spans))),
    el("button", { type: "button", id: "merge", class: "primary", onclick: () => {
      const m = merge3(s.base, ed.spans, t.spans);
      s.base = t.spans;
      s.etag = t.revision;
      ed.setSpans(m.spans);
      s.dirty = true;
      s.conflict.hidden = true;
      renderMeta(s);
      toast(`Merged ${m.applied} edit(s) onto revision ${t.revision}` +
        (m.conflicts.length ? `; ${m.conflicts.length} of their span(s) replaced by yours` : "") + ". Review, then save.");
    } }, "Merge my edits onto theirs"), " ",
    el("button", { type: "button", id: "reload", onclick: () => {
      s.base = t.spans;
      s.etag = t.revision;
      ed.setSpans(t.spans);
      s.dirty = false;
      s.dirtyMark.textContent = "";
      s.conflict.hidden = true;
      renderMeta(s);
      toast(`Reloaded revision ${t.revision}; your edits were dropped.`);
    } }, "Reload theirs (drop mine)"));
  s.conflict.hidden = false;
  s.conflict.querySelector("#merge").focus();
}

async function review(s, action) {
  if (s.dirty && action !== "reopen") { toast("Save your changes first.", "warn"); return; }
  try {
    const r = await call("POST", `/v1/trajectories/${s.tid}/review`, { body: { action }, ifMatch: s.etag });
    s.status = r.data.status;
    renderMeta(s);
    if (action !== "reopen") await release(s, "completed");
    toast(`Trajectory ${r.data.status}.`);
    const next = document.getElementById("claim");
    if (next && action !== "reopen") next.focus();
  } catch (e) { toast(errorText(e), "error"); }
}

// The training view inside the editor (navigating to it would end the lease).
async function toggleTraining(s) {
  s.training.hidden = !s.training.hidden;
  if (!s.training.hidden) {
    s.training.replaceChildren();
    await showTraining(s.training, s.tid, { inline: true });
    s.training.scrollIntoView({ block: "start" });
  }
}

async function toggleHistory(s) {
  s.history.hidden = !s.history.hidden;
  if (!s.history.hidden) await showHistory(s.history, s.tid, s.editor);
}
