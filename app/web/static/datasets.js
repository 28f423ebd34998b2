// Datasets: the list, and one snapshot's stats (kinds, lengths, complexity histogram) and items.
import { get } from "./api.js";
import { el, fmtTime, fmtNum } from "./dom.js";
import { barChart } from "./charts.js";

export async function showDatasets(root) {
  const page = await get("/v1/datasets?limit=200");
  root.append(el("section", { class: "card" }, el("h1", { text: "Datasets" }),
    page.items.length ? el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, ...["name", "items", "train / eval", "created", "content hash"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, page.items.map((d) => el("tr", {},
        el("td", {}, el("a", { href: `#/datasets/${d.id}` }, d.name)), el("td", { text: d.stats.n_items }),
        el("td", { text: `${d.stats.by_split.train} / ${d.stats.by_split.eval}` }), el("td", { text: fmtTime(d.created_at) }),
        el("td", {}, el("code", { text: d.content_sha256.slice(0, 12) }))))))
      : el("p", { text: "No dataset yet." })));
}

export async function showDataset(root, id) {
  const [d, items] = await Promise.all([get(`/v1/datasets/${id}`), get(`/v1/datasets/${id}/items?limit=200`)]);
  const st = d.stats;
  const kinds = el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["kind", "spans", "characters", "chars / span"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, Object.entries(st.spans).map(([k, v]) => el("tr", {},
      el("td", {}, el("span", { class: `kind k-${k}`, "data-letter": k[0].toUpperCase() }, k)),
      el("td", { text: v.count }), el("td", { text: v.chars }), el("td", { text: v.count ? fmtNum(v.chars / v.count) : "—" })))));
  const hist = st.complexity.histogram;
  const bars = hist.counts.map((c, i) => ({ label: fmtNum(hist.edges[i], 2), value: c }));
  root.append(el("section", { class: "card" }, el("h1", {}, "Dataset ", el("code", { text: d.name })),
    el("p", { text: `${st.n_items} items (${st.by_split.train} train, ${st.by_split.eval} eval), ${st.n_messages} messages · ` +
      `complexity ${fmtNum(st.complexity.min)}–${fmtNum(st.complexity.max)}, mean ${fmtNum(st.complexity.mean)} · sha256 ${d.content_sha256.slice(0, 16)}…` })),
  el("div", { class: "cols" },
    el("section", { class: "card" }, el("h2", { text: "Span kinds and lengths" }), kinds),
    el("section", { class: "card" }, el("h2", { text: "Complexity histogram" }), barChart("Complexity histogram", bars))),
  el("section", { class: "card" }, el("h2", { text: "Items" }), el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["#", "trajectory", "revision", "split", "complexity", ""].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, items.items.map((it) => el("tr", {},
      el("td", { text: it.position }), el("td", {}, el("a", { href: `#/trajectory/${it.trajectory_id}` }, el("code", { text: it.trajectory_id }))),
      el("td", { text: it.span_revision }), el("td", { text: it.split }), el("td", { text: fmtNum(it.complexity_score) }),
      el("td", {}, el("a", { href: `#/training/${it.trajectory_id}` }, "training view"))))))));
}
