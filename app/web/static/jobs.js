// Jobs: the list with status and progress; a job's page with live curves (SSE), events, the eval report
// before/after, artifact downloads, and cancel / retry (operate scope).
import { get, call, sse, download } from "./api.js";
import { el, toast, errorText, fmtTime, fmtNum } from "./dom.js";
import { lineChart } from "./charts.js";

let live = null; // {stream, timer} of the open page
export function leaveJobs() {
  if (!live) return;
  if (live.stream) live.stream.abort();
  clearInterval(live.timer);
  live = null;
}

const progressBar = (p) => {
  const step = p && p.step ? p.step : 0;
  const total = p && (p.total || p.total_steps) ? p.total || p.total_steps : 0;
  return el("span", { class: "progress" }, el("progress", { max: total || 1, value: step, "aria-label": `step ${step} of ${total}` }),
    ` ${step}/${total || "?"}`);
};

export async function showJobs(root) {
  const table = el("tbody");
  const draw = async () => {
    const page = await get("/v1/jobs?limit=100");
    table.replaceChildren(...page.items.map((j) => el("tr", { "data-status": j.status },
      el("td", {}, el("a", { href: `#/jobs/${j.id}` }, el("code", { text: j.id.slice(0, 8) }))), el("td", { text: j.kind }),
      el("td", {}, el("span", { class: `status s-${j.status}` }, j.status)), el("td", {}, progressBar(j.progress)),
      el("td", { text: j.progress && j.progress.tokens_per_s ? fmtNum(j.progress.tokens_per_s) : "—" }),
      el("td", { text: fmtTime(j.created_at) }))));
  };
  root.append(el("section", { class: "card" }, el("h1", { text: "Jobs" }), el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["job", "kind", "status", "progress", "tokens/s", "created"].map((h) => el("th", { scope: "col", text: h })))),
    table)));
  await draw();
  live = { timer: setInterval(() => draw().catch(() => {}), 5000) };
}

const CURVES = [
  ["Loss per kind", [["total", "loss"], ["reason", "loss_reason"], ["action", "loss_action"]]],
  ["Span weights", [["reason", "weight_reason"], ["action", "weight_action"]]],
  ["Learning rate", [["lr", "lr"]]],
  ["Supervised tokens/s", [["tokens/s", "tokens_per_s"]]],
];

export async function showJob(root, id) {
  const rows = new Map(); // step → metrics row
  const head = el("section", { class: "card" });
  const charts = el("div", { class: "charts", "aria-live": "off" });
  const events = el("ul", { class: "events", "aria-label": "Events, newest first" });
  const report = el("section", { class: "card" }, el("h2", { text: "Eval report" }),
    el("p", { text: "Before and after training, once the job has finished." }));
  const files = el("section", { class: "card" });
  root.append(head, el("section", { class: "card" }, el("h2", { text: "Live metrics" }), charts),
    el("div", { class: "cols" }, el("section", { class: "card" }, el("h2", { text: "Events" }), events), report), files);

  const drawCharts = () => {
    const all = [...rows.values()].sort((a, b) => a.step - b.step);
    charts.dataset.steps = all.length;
    charts.replaceChildren(...CURVES.map(([title, series]) => el("figure", {}, el("figcaption", { text: title }),
      lineChart(title, series.map(([name, f]) => ({ name, points: all.filter((r) => typeof r[f] === "number").map((r) => [r.step, r[f]]) }))))));
  };
  let drawQueued = false; // a replayed stream brings many rows at once: draw once per frame
  const scheduleCharts = () => {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; drawCharts(); });
  };
  const progressBox = el("span", { id: "job-progress" });
  const addRow = (r) => {
    if (!r || typeof r.step !== "number" || !("loss" in r)) return;
    rows.set(r.step, r);
    const lastRow = rows.get(Math.max(...rows.keys()));
    progressBox.replaceChildren(progressBar(lastRow), ` · ${fmtNum(lastRow.tokens_per_s)} tokens/s · ETA ${Math.round(lastRow.eta_s || 0)} s`);
  };
  const drawHead = async () => {
    const j = await get(`/v1/jobs/${id}`);
    const operate = document.body.dataset.operate !== "no";
    const act = (what) => async () => {
      try { await call("POST", `/v1/jobs/${id}/${what}`); toast(`${what} requested.`); await drawHead(); } catch (e) { toast(errorText(e), "error"); }
    };
    const canCancel = ["queued", "running"].includes(j.status) && !j.cancel_requested;
    const canRetry = ["failed", "cancelled"].includes(j.status);
    head.replaceChildren(el("h1", {}, `${j.kind} job `, el("code", { text: j.id })),
      el("p", {}, el("span", { class: `status s-${j.status}`, id: "job-status" }, j.status), " ", progressBox,
        ` · attempt ${j.attempts}/${j.max_attempts}`,
        j.cancel_requested ? " · cancel requested" : ""),
      el("p", {}, `student ${String(j.config.student_model || "—").split("/").pop()} · dataset `,
        j.dataset_id ? el("a", { href: `#/datasets/${j.dataset_id}` }, j.dataset_id) : "—"),
      j.error ? el("pre", { class: "error", text: j.error.slice(0, 2000) }) : "",
      operate && canCancel ? el("button", { type: "button", id: "cancel", onclick: act("cancel") }, "Cancel job") : "",
      operate && canRetry ? el("button", { type: "button", id: "retry", onclick: act("retry") }, "Retry job") : "");
    return j;
  };
  const drawFinished = async () => {
    const list = await get(`/v1/jobs/${id}/artifacts`);
    files.replaceChildren(el("h2", { text: "Artifacts" }), el("ul", { class: "files" }, list.items.map((a) => el("li", {},
      el("button", { type: "button", class: "link", onclick: () => download(`/v1/jobs/${id}/artifacts/${a.path}`, a.path.split("/").pop())
        .catch((e) => toast(errorText(e), "error")) }, a.path), ` ${a.kind} · ${a.size.toLocaleString()} bytes`))));
    report.replaceChildren(el("h2", { text: "Eval report" }));
    if (!list.items.some((a) => a.path === "eval_report.json")) { report.append(el("p", { text: "No eval report (yet)." })); return; }
    const r = await get(`/v1/jobs/${id}/artifacts/eval_report.json`);
    report.append(evalTable(r));
  };

  const m = await get(`/v1/jobs/${id}/metrics?limit=10000`);
  m.items.forEach(addRow);
  const job = await drawHead();
  if (!rows.size) progressBox.replaceChildren(progressBar(job.progress));
  drawCharts();
  const addEvent = (e) => {
    if (e.kind === "progress") return;
    events.prepend(el("li", { class: `ev ev-${e.kind}` }, el("time", { text: new Date(e.ts).toLocaleTimeString() }), ` ${e.kind}: ${e.message}`));
  };
  live = { timer: null };
  live.stream = sse(`/v1/jobs/${id}/events/stream`, (ev) => {
    if (ev.event === "progress") { addRow(ev.data.data); scheduleCharts(); }
    else { addEvent(ev.data); if (ev.event === "state") drawHead().catch(() => {}); }
  }, { onEnd: async () => { await drawHead(); const again = await get(`/v1/jobs/${id}/metrics?limit=10000`); again.items.forEach(addRow); drawCharts(); await drawFinished(); } });
  if (["succeeded", "failed", "cancelled"].includes(job.status)) await drawFinished();
}

function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
    else if (typeof v === "number") out[`${prefix}${k}`] = v;
  }
  return out;
}

function evalTable(r) {
  const before = flatten(r.before), after = flatten(r.after), delta = flatten(r.delta);
  const keys = Object.keys(after).filter((k) => !k.includes("count") && !k.endsWith("tokens")).slice(0, 40);
  return el("table", { class: "grid report" }, el("thead", {}, el("tr", {}, ...["metric", "before", "after", "Δ"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, keys.map((k) => el("tr", {}, el("td", { text: k }), el("td", { text: fmtNum(before[k]) }),
      el("td", { text: fmtNum(after[k]) }), el("td", { text: fmtNum(delta[k]) })))));
}
