// The training view of a trajectory: the student's tokens, as a chosen distill job renders them, each
// marked with the kind training gives it (reason / action / observation / context) and end of turn.
import { get } from "./api.js";
import { el, errorText } from "./dom.js";

const NAMES = { r: "reason", a: "action", o: "observation", c: "context" };

export async function showTraining(root, tid, { inline = false } = {}) {
  const out = el("div", { class: "tokens-box", "aria-live": "polite" });
  const pick = el("select", { id: "job-pick", "aria-label": "Distill job (student model)" });
  root.append(el("section", { class: "card" }, el(inline ? "h2" : "h1", {}, "Training view of ", el("code", { text: tid })),
    el("p", { text: "Exactly the tokens the student is trained on, from a distill job's token views. " +
      "Reason and action tokens are trained (the end-of-turn token as action); observation and context are not." }),
    el("label", { for: "job-pick" }, "Student (distill job): "), pick, " ",
    inline ? "" : el("a", { href: `#/trajectory/${tid}` }, "Spans of this trajectory")), out);
  let jobs;
  try { jobs = (await get("/v1/jobs?kind=distill&limit=100")).items; } catch (e) {
    out.append(el("p", { class: "error", text: `Jobs need the operate scope: ${errorText(e)}` }));
    return;
  }
  pick.replaceChildren(...jobs.map((j) => el("option", { value: j.id },
    `${j.id.slice(0, 8)} · ${String(j.config.student_model || "").split("/").pop()} · ${j.status}`)));
  const load = async () => {
    out.replaceChildren(el("p", { text: "Loading…" }));
    try { render(out, await get(`/v1/jobs/${pick.value}/token-views/${tid}`)); return true; } catch (e) {
      out.replaceChildren(el("p", { class: "error", role: "alert", text: errorText(e) }));
      return false;
    }
  };
  pick.addEventListener("change", load);
  for (const j of jobs) { // the newest job that holds this trajectory
    pick.value = j.id;
    if (await load()) return;
  }
  if (!jobs.length) out.replaceChildren(el("p", { text: "No distill job yet." }));
}

function render(out, view) {
  out.replaceChildren();
  view.examples.forEach((ex) => {
    const counts = { r: 0, a: 0, o: 0, c: 0 };
    const eot = new Set(ex.eot);
    const toks = el("div", { class: "tokens", role: "list", "aria-label": `example ${ex.example + 1} tokens` });
    ex.tokens.forEach((t, i) => {
      const k = ex.kinds[i];
      counts[k] += 1;
      const shown = t.replace(/\n/g, "⏎\n");
      toks.append(el("span", { class: `tok t-${k}${eot.has(i) ? " eot" : ""}`, role: "listitem", "data-kind": NAMES[k],
        title: `#${i} ${NAMES[k]}${eot.has(i) ? " (end of turn)" : ""}`, "aria-label": `${t} ${NAMES[k]}${eot.has(i) ? " end of turn" : ""}` }, shown));
    });
    const legend = el("p", { class: "legend" }, ...["r", "a", "o", "c"].map((k) =>
      el("span", { class: `tok t-${k}`, "data-kind": NAMES[k] }, `${NAMES[k]} ${counts[k]}`)),
    el("span", { class: "tok t-a eot" }, `end of turn ${ex.eot.length}`),
    ` · ${ex.tokens.length} tokens${ex.truncated ? " · truncated" : ""}${ex.turn !== null ? ` · turn ${ex.turn} in its own example` : ""}`);
    out.append(el("section", { class: "card" }, el("h2", { text: `Example ${ex.example + 1} of ${view.examples.length} · student ${String(view.student_model || "").split("/").pop()}` }), legend, toks));
  });
}
