// The page's shell: the key form, the navigation and the hash router (#/annotate, #/trajectory/<id>,
// #/training/<id>, #/datasets[/<id>], #/jobs[/<id>]).
import { getKey, setKey, get } from "./api.js";
import { el, toast } from "./dom.js";
import { showAnnotate, showTrajectory, leaveAnnotate } from "./annotate.js";
import { showTraining } from "./training.js";
import { showDatasets, showDataset } from "./datasets.js";
import { showJobs, showJob, leaveJobs } from "./jobs.js";

const main = () => document.getElementById("main");

const routes = [
  [/^#\/annotate$/, () => showAnnotate(main())],
  [/^#\/trajectory\/([\w-]+)$/, (m) => showTrajectory(main(), m[1])],
  [/^#\/training\/([\w-]+)$/, (m) => showTraining(main(), m[1])],
  [/^#\/datasets$/, () => showDatasets(main())],
  [/^#\/datasets\/([\w-]+)$/, (m) => showDataset(main(), m[1])],
  [/^#\/jobs$/, () => showJobs(main())],
  [/^#\/jobs\/([\w-]+)$/, (m) => showJob(main(), m[1])],
];

async function route() {
  await leaveAnnotate();
  leaveJobs();
  const hash = location.hash || "#/annotate";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.toggleAttribute("aria-current", hash.startsWith(`#/${a.dataset.nav}`));
    if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
  }
  const root = main();
  root.replaceChildren();
  if (!getKey()) {
    root.append(el("section", { class: "card" }, el("h1", { text: "Welcome" }),
      el("p", { text: "Enter an API key above (annotate scope to annotate; operate to watch jobs). " +
        "It is kept in this browser tab only and sent to this server's /v1 API." })));
    return;
  }
  for (const [re, show] of routes) {
    const m = hash.match(re);
    if (m) {
      try { await show(m); } catch (e) { root.append(el("p", { class: "error", role: "alert", text: e.message })); }
      // a screen reader or keyboard user lands on the new content, unless a view focused something itself
      if (document.activeElement === document.body) root.focus({ preventScroll: true });
      return;
    }
  }
  root.append(el("p", { text: "No such page." }));
}

async function checkKey() {
  const status = document.getElementById("key-status");
  if (!getKey()) { status.textContent = "no key"; return; }
  try {
    await get("/v1/jobs?limit=1");
    status.textContent = "key set · operate";
    document.body.dataset.operate = "yes";
  } catch (e) {
    status.textContent = e.status === 401 ? "key refused" : "key set";
    document.body.dataset.operate = "no";
  }
}

document.getElementById("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("key-input");
  setKey(input.value.trim());
  input.value = "";
  await checkKey();
  toast("Key saved for this tab.");
  route();
});
document.getElementById("key-forget").addEventListener("click", async () => {
  await leaveAnnotate();
  setKey("");
  await checkKey();
  route();
});
window.addEventListener("hashchange", route);
checkKey().then(route);
