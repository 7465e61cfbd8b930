// cenas_jax live view. Everything that came from a run (code, prompts, answers, messages, names) is put
// into the page with textContent, never parsed as HTML. Data comes from /api/ (served) or from the JSON
// block #cenas-data (the self-contained report).
"use strict";

const EMBED = (() => {
  const el = document.getElementById("cenas-data");
  return el ? JSON.parse(el.textContent) : null;
})();
const POLL_MS = 3000;
const state = { runs: [], snr: null, selected: [], details: {}, cands: {}, versions: {}, filter: {}, sort: ["quality", -1],
                openId: null, openRun: null };

async function api(path) {
  if (EMBED) {
    const p = path.split("/").slice(2).map(decodeURIComponent);  // ["runs", name?, "candidates"?, id?]
    if (p[0] === "proxy-snr") return EMBED.proxy_snr || [];
    if (p.length === 1) return EMBED.runs;
    if (p.length === 2) return EMBED.details[p[1]];
    if (p.length === 3) return EMBED.candidates[p[1]] || [];
    return (EMBED.candidate[p[1]] || {})[p[3]] || null;
  }
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok && r.status !== 409) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// ------------------------------------------------------------------ DOM helpers (text only)

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmt(x, nd = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  return Number.isInteger(x) && nd !== 3 ? x.toLocaleString() : x.toFixed(nd);
}

function intFmt(x) { return x === null || x === undefined ? "–" : Number(x).toLocaleString(); }

function clear(id) { const e = document.getElementById(id); e.replaceChildren(); return e; }

// ------------------------------------------------------------------ runs and polling

async function refresh() {
  let runs;
  try {
    runs = await api("/api/runs");
    document.getElementById("live").textContent = EMBED ? "snapshot (self-contained report)" :
      `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("live").textContent = `server unreachable (${e.message}); retrying`;
    return;
  }
  state.runs = runs;
  if (state.snr === null) {
    state.snr = await api("/api/proxy-snr");
    renderSNR();
  }
  if (!state.selected.length && runs.length) state.selected = [runs[0].name];
  renderRunList();
  let changed = false;
  for (const name of state.selected) {
    const r = runs.find((x) => x.name === name);
    if (!r || state.versions[name] === r.version) continue;
    state.details[name] = await api(`/api/runs/${encodeURIComponent(name)}`);
    state.cands[name] = await api(`/api/runs/${encodeURIComponent(name)}/candidates`);
    state.versions[name] = r.version;
    changed = true;
  }
  if (changed) renderAll();
}

function renderRunList() {
  const nav = clear("runs");
  nav.append(el("span", { class: "label" }, state.runs.length > 1 ? "runs (tick several to compare):" : "run:"));
  for (const r of state.runs) {
    const box = el("input", { type: "checkbox", id: `run-${r.name}` });
    box.checked = state.selected.includes(r.name);
    box.addEventListener("change", () => {
      state.selected = box.checked ? [...state.selected, r.name] : state.selected.filter((n) => n !== r.name);
      if (!box.checked) delete state.versions[r.name];
      refresh().then(renderAll);
    });
    const badge = el("span", { class: `badge ${r.status}` }, r.status);
    nav.append(el("label", { class: "run", for: `run-${r.name}` }, box, r.name, " ", badge,
      r.generator ? el("span", { class: "muted" }, ` ${r.generator}${r.novelty === false ? ", novelty off" : ""}`) : null));
  }
}

function renderAll() {
  renderStatus();
  renderCharts();
  renderTheory();
  renderTable();
}

// ------------------------------------------------------------------ status

const PHASES = ["generate", "train", "select", "update"];

function renderStatus() {
  const box = clear("status");
  for (const name of state.selected) {
    const d = state.details[name];
    if (!d) continue;
    if (d.status === "damaged") {
      box.append(el("div", { class: "card damaged" }, el("h2", {}, name), "damaged: ", d.error || "unreadable"));
      continue;
    }
    const card = el("div", { class: "card" }, el("h2", {}, name, " ", el("span", { class: `badge ${d.status}` }, d.status)));
    card.append(el("p", {}, `${d.generator} · ${d.model} · ${d.dataset} · mode ${d.mode} · `,
      `${d.cycles_completed} of ${d.cycles_planned} cycles × ${d.candidates_per_cycle} candidates · `,
      `best Q so far ${fmt(d.best_q)} (best corpus Q ${fmt(d.corpus_best_q)})`));
    if (d.progress && !PHASES.includes(d.progress.phase)) {
      card.append(el("div", { class: "progress" }, `before cycle 0: ${d.progress.phase} phase `,
        "(the seed corpus trained on each dataset, then the warm start)"));
    } else if (d.progress) {
      const p = d.progress;
      const steps = el("ol", { class: "phases" });
      PHASES.forEach((ph, i) => steps.append(el("li", { class: i < p.phase_index ? "done" : i === p.phase_index ? "now" : "" }, ph)));
      const bar = el("progress", { max: Math.max(1, p.slots), value: Math.min(p.generated, p.slots) });
      card.append(el("div", { class: "progress" }, `cycle ${p.cycle}: `, steps, bar,
        ` ${p.generated}/${p.slots} sampled, ${p.checked} checked, ${p.trained} trained`));
    }
    box.append(card);
  }
}

// ------------------------------------------------------------------ charts

const PLOT_CFG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };

function chart(title, traces, layout) {
  const div = el("div", { class: "chart" });
  document.getElementById("charts").append(div);
  window.Plotly.newPlot(div, traces, Object.assign({
    title: { text: title, font: { size: 14 } }, margin: { l: 55, r: 15, t: 40, b: 50 }, height: 340,
    legend: { orientation: "h", y: -0.32, yanchor: "top" }, xaxis: { title: { text: "cycle", standoff: 4 }, dtick: 1 },
  }, layout || {}), PLOT_CFG);
  return div;
}

function label(name, what) { return state.selected.length > 1 ? `${name}: ${what}` : what; }

function renderCharts() {
  clear("charts");
  if (!window.Plotly) {
    document.getElementById("charts").append(el("p", {}, "plotly.js did not load: no charts"));
    return;
  }
  const q = [], vr = [], mass = [], nov = [], time = [], scatter = [], flops = [];
  for (const name of state.selected) {
    const d = state.details[name];
    if (!d || !d.cycles) continue;
    const cy = d.cycles.map((c) => c.cycle);
    q.push({ x: cy, y: d.cycles.map((c) => c.mean_q), name: label(name, "mean Q (95% CI)"), mode: "lines+markers",
      error_y: { type: "data", symmetric: false, array: d.cycles.map((c) => (c.q_high ?? c.mean_q) - c.mean_q),
        arrayminus: d.cycles.map((c) => c.mean_q - (c.q_low ?? c.mean_q)) } });
    q.push({ x: cy, y: d.cycles.map((c) => c.best_q), name: label(name, "best Q (cycle)"), mode: "markers" });
    q.push({ x: cy, y: d.cycles.map((c) => c.best_so_far), name: label(name, "best so far"), mode: "lines", line: { dash: "dot" } });
    q.push({ x: cy, y: d.cycles.map((c) => c.gamma), name: label(name, "γ_t"), mode: "lines", line: { dash: "dash" } });
    if (d.corpus_best_q !== null) q.push({ x: cy, y: cy.map(() => d.corpus_best_q), name: label(name, "best corpus Q"),
      mode: "lines", line: { color: "#888", width: 1 } });
    for (const [mode, m] of Object.entries(d.modes || {})) {
      const ts = Object.keys(m.per_cycle).filter((t) => m.per_cycle[t]).map(Number);
      const pc = ts.map((t) => m.per_cycle[String(t)]);
      vr.push({ x: ts, y: pc.map((r) => r.rate), name: label(name, `${mode} (Wilson 95%)`), mode: "lines+markers",
        error_y: { type: "data", symmetric: false, array: pc.map((r) => r.high - r.rate), arrayminus: pc.map((r) => r.rate - r.low) } });
    }
    if (d.elite_mass) {
      const n = d.elite_mass.mass.length;
      const t = [...Array(n).keys()].map((i) => cy[i]);
      mass.push({ x: t, y: d.elite_mass.mass, name: label(name, "C_t"), mode: "lines+markers",
        error_y: { type: "data", symmetric: false, array: d.elite_mass.high.map((h, i) => h - d.elite_mass.mass[i]),
          arrayminus: d.elite_mass.low.map((l, i) => d.elite_mass.mass[i] - l) } });
      mass.push({ x: t, y: d.elite_mass.bound, name: label(name, "bound 1−(1−ρ₀)^t"), mode: "lines", line: { dash: "dash" } });
    }
    nov.push({ x: cy, y: d.cycles.map((c) => c.duplicates), name: label(name, "near-duplicates rejected"), type: "bar" });
    nov.push({ x: cy, y: d.cycles.map((c) => c.diversity), name: label(name, "diversity (mean Jaccard)"), yaxis: "y2", mode: "lines+markers" });
    if (state.selected.length > 1) {  // side by side: one bar per run and cycle (phases stacked would mix runs)
      time.push({ x: cy, y: d.cycles.map((c) => c.seconds), name: label(name, "all phases"), type: "bar" });
    } else {
      for (const ph of PHASES) {
        time.push({ x: cy, y: d.cycles.map((c) => (c.phases || {})[ph] || 0), name: ph, type: "bar" });
      }
    }
    const rows = (state.cands[name] || []).filter((r) => r.accuracy !== null && r.params);
    const front = pareto(rows);
    scatter.push({ x: rows.map((r) => r.params), y: rows.map((r) => r.accuracy), mode: "markers", name: label(name, "trained"),
      text: rows.map((r) => r.id), hoverinfo: "x+y+text", marker: { size: 6, opacity: 0.7 } });
    scatter.push({ x: front.map((r) => r.params), y: front.map((r) => r.accuracy), mode: "lines+markers",
      name: label(name, "Pareto front"), line: { shape: "hv" }, text: front.map((r) => r.id), hoverinfo: "x+y+text" });
    const fr = (state.cands[name] || []).filter((r) => r.accuracy !== null && r.flops).map((r) => ({ ...r, params: r.flops }));
    if (fr.length) {
      const ff = pareto(fr);
      flops.push({ x: fr.map((r) => r.flops), y: fr.map((r) => r.accuracy), mode: "markers", name: label(name, "trained"),
        text: fr.map((r) => r.id), hoverinfo: "x+y+text", marker: { size: 6, opacity: 0.7 } });
      flops.push({ x: ff.map((r) => r.flops), y: ff.map((r) => r.accuracy), mode: "lines+markers",
        name: label(name, "Pareto front"), line: { shape: "hv" }, text: ff.map((r) => r.id), hoverinfo: "x+y+text" });
    }
  }
  chart("Quality per cycle", q, { yaxis: { title: { text: "Q" } } });
  chart("Valid-generation rate per mode", vr, { yaxis: { title: { text: "valid rate" }, range: [0, 1.05] } });
  if (mass.length) chart("Elite mass C_t against Theorem 3's bound", mass, { yaxis: { title: { text: "C_t" }, range: [0, 1.05] } });
  chart("Novelty and diversity", nov, { yaxis: { title: { text: "rejected" } },
    yaxis2: { title: { text: "Jaccard" }, overlaying: "y", side: "right", range: [0, 1] } });
  chart(state.selected.length > 1 ? "Time per cycle" : "Time per phase", time,
    { barmode: state.selected.length > 1 ? "group" : "stack", yaxis: { title: { text: "seconds" } } });
  chart("Accuracy against parameters (Pareto front)", scatter, { xaxis: { title: { text: "parameters" }, type: "log" },
    yaxis: { title: { text: "proxy accuracy" } } });
  if (flops.length) chart("Accuracy against FLOPs per example (Pareto front)", flops, {
    xaxis: { title: { text: "FLOPs" }, type: "log" }, yaxis: { title: { text: "proxy accuracy" } } });
}

function pareto(rows) {
  const sorted = [...rows].sort((a, b) => a.params - b.params || b.accuracy - a.accuracy);
  const out = [];
  let best = -Infinity;
  for (const r of sorted) if (r.accuracy > best) { out.push(r); best = r.accuracy; }
  return out;
}

// ------------------------------------------------------------------ theory

function renderTheory() {
  const box = clear("theory");
  for (const name of state.selected) {
    const d = state.details[name];
    if (!d || !d.theory) continue;
    const t = el("table", { class: "theory" }, el("caption", {}, label(name, "The theory, checked on this run")),
      el("tr", {}, el("th", {}, "result"), el("th", {}, "this run"), el("th", {}, "paper")));
    for (const r of d.theory) t.append(el("tr", {}, el("td", {}, r.result), el("td", {}, r.ours), el("td", {}, r.paper)));
    box.append(t);
  }
}

// ------------------------------------------------------------------ proxy reliability (result 6)

function renderSNR() {
  const box = clear("snr");
  if (!state.snr || !state.snr.length) return;
  box.append(el("h2", {}, "Proxy reliability (result 6): predicted against measured rank correlation"));
  const traces = [];
  for (const r of state.snr) {
    if (r.error) { box.append(el("p", { class: "card damaged" }, r.name, ": ", r.error)); continue; }
    box.append(el("p", {}, `${r.name}: K = ${r.K} architectures × S = ${r.S} seeds, proxy ${r.proxy_epochs} epochs `,
      `against ${r.truth_epochs}; SNR ${fmt(r.snr)}`, r.snr_ci ? ` [${fmt(r.snr_ci[0])}, ${fmt(r.snr_ci[1])}]` : "",
      `, σ²_arch ${fmt(r.sigma2_arch, 5)}, σ²_noise ${fmt(r.sigma2_noise, 5)}`,
      r.failures ? `; ${r.failures} architectures failed and were dropped` : ""));
    const t = el("table", {}, el("tr", {}, ...["comparison", "predicted ρ_S", "expected at K", "measured ρ_S", "p"].map((h) => el("th", {}, h))));
    for (const c of r.comparisons) {
      t.append(el("tr", {}, el("td", {}, c.description || c.name),
        el("td", {}, fmt(c.predicted) + (c.predicted_ci ? ` [${fmt(c.predicted_ci[0])}, ${fmt(c.predicted_ci[1])}]` : "")),
        el("td", {}, fmt(c.expected_at_k)),
        el("td", {}, c.measured === null ? (c.error || "–") : fmt(c.measured) + (c.measured_ci ? ` [${fmt(c.measured_ci[0])}, ${fmt(c.measured_ci[1])}]` : "")),
        el("td", {}, fmt(c.p_value, 4))));
    }
    box.append(t);
    const names = r.comparisons.map((c) => `${state.snr.length > 1 ? r.name + ": " : ""}${c.name}`);
    traces.push({ x: names, y: r.comparisons.map((c) => c.predicted), name: `${r.name} predicted`, type: "bar",
      error_y: { type: "data", symmetric: false, array: r.comparisons.map((c) => c.predicted_ci ? c.predicted_ci[1] - c.predicted : 0),
        arrayminus: r.comparisons.map((c) => c.predicted_ci ? c.predicted - c.predicted_ci[0] : 0) } });
    traces.push({ x: names, y: r.comparisons.map((c) => c.measured), name: `${r.name} measured`, type: "bar",
      error_y: { type: "data", symmetric: false, array: r.comparisons.map((c) => c.measured_ci && c.measured !== null ? c.measured_ci[1] - c.measured : 0),
        arrayminus: r.comparisons.map((c) => c.measured_ci && c.measured !== null ? c.measured - c.measured_ci[0] : 0) } });
  }
  if (traces.length && window.Plotly) {
    const div = el("div", { class: "chart" });
    box.append(div);
    window.Plotly.newPlot(div, traces, { title: { text: "Spearman ρ_S: predicted from the SNR against measured", font: { size: 14 } },
      barmode: "group", height: 320, margin: { l: 55, r: 15, t: 40, b: 60 }, yaxis: { title: { text: "ρ_S" }, range: [-1, 1] } }, PLOT_CFG);
  }
}

// ------------------------------------------------------------------ candidates

const COLS = [["id", "id"], ["cycle", "cycle"], ["mode", "mode"], ["verdict", "verdict"], ["error_kind", "error"],
  ["quality", "Q"], ["accuracy", "accuracy"], ["params", "params"], ["flops", "FLOPs"], ["tokens", "tokens"],
  ["beats_corpus", "beats corpus"], ["degenerate", "degenerate"]];
const FILTERS = ["cycle", "mode", "verdict", "error_kind"];

function renderTable() {
  const box = clear("table");
  const name = state.selected[0];
  let rows = (state.cands[name] || []);
  box.append(el("h2", {}, `Candidates of ${name || "–"}`));
  const bar = el("div", { class: "filters" });
  for (const f of FILTERS) {
    const values = [...new Set(rows.map((r) => r[f]).filter((v) => v !== null && v !== undefined))].sort((a, b) => (a > b ? 1 : -1));
    const sel = el("select", { id: `filter-${f}`, "aria-label": f }, el("option", { value: "" }, `${f}: all`));
    for (const v of values) sel.append(el("option", { value: String(v) }, String(v)));
    sel.value = state.filter[f] || "";
    sel.addEventListener("change", () => { state.filter[f] = sel.value; renderTable(); });
    bar.append(sel);
  }
  box.append(bar);
  rows = rows.filter((r) => FILTERS.every((f) => !state.filter[f] || String(r[f]) === state.filter[f]));
  const [key, dir] = state.sort;
  rows = [...rows].sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x > y ? 1 : -1) * dir;
  });
  const head = el("tr", {});
  for (const [k, title] of COLS) {
    const th = el("th", { class: "sortable", data: { key: k } }, title + (k === key ? (dir > 0 ? " ▲" : " ▼") : ""));
    th.addEventListener("click", () => { state.sort = [k, k === key ? -dir : -1]; renderTable(); });
    head.append(th);
  }
  const table = el("table", { id: "candidates" }, head);
  for (const r of rows) {
    const tr = el("tr", { class: `v-${r.verdict}`, data: { id: r.id } });
    for (const [k] of COLS) {
      let v = r[k];
      if (k === "params" || k === "tokens") v = intFmt(v);
      else if (k === "flops") v = v === null ? "–" : Number(v).toExponential(2);
      else if (k === "quality" || k === "accuracy") v = fmt(v);
      else if (k === "beats_corpus") v = v === null ? "–" : v ? "yes" : "no";
      else if (k === "degenerate") v = v ? "yes" : "";
      tr.append(el("td", {}, v ?? "–"));
    }
    tr.addEventListener("click", () => openCandidate(name, r.id));
    table.append(tr);
  }
  box.append(el("p", { class: "muted" }, `${rows.length} shown; click a row for its code, diff, prompt and answer`), table);
}

function pre(title, text, cls) {
  if (text === null || text === undefined || text === "") return null;
  return el("details", { open: "" }, el("summary", {}, title), el("pre", { class: cls || "" }, text));
}

async function openCandidate(name, id) {
  const c = await api(`/api/runs/${encodeURIComponent(name)}/candidates/${encodeURIComponent(id)}`);
  const box = clear("detail");
  if (!c) { box.append(el("p", {}, `no candidate ${id}`)); return; }
  state.openId = id;
  const lineage = el("span", { class: "lineage" });
  c.lineage.forEach((lid, i) => {
    if (i) lineage.append(" ← ");
    const a = el("a", { href: "#detail" }, lid);
    a.addEventListener("click", (ev) => { ev.preventDefault(); openCandidate(name, lid); });
    lineage.append(a);
  });
  const seeds = c.evaluations.filter((e) => e.budget === "proxy").flatMap((e) => e.seed_accuracies);
  box.append(
    el("h2", { id: "detail-title" }, `Candidate ${c.id}`),
    el("p", {}, `cycle ${c.cycle}, slot ${c.slot}, attempt ${c.attempt}, ${c.mode}, dataset ${c.dataset}; verdict `,
      el("b", {}, c.verdict || "unchecked"), c.error_kind ? ` (${c.error_kind})` : "", `; Q ${fmt(c.quality)}`,
      seeds.length ? `; seed accuracies ${seeds.map((s) => fmt(s, 4)).join(", ")}` : "",
      c.nearest ? `; nearest ${c.nearest} (Jaccard ${fmt(c.similarity)})` : ""),
    el("p", {}, "lineage: ", lineage),
  );
  const errs = [c.error_message, ...c.evaluations.map((e) => e.error_message)].filter(Boolean);
  const parts = [pre("error message", [...new Set(errs)].join("\n\n"), "error"), pre("code", c.source, "code"),
    pre("diff to the parent", c.diff, "diff"), pre("prompt", c.prompt), pre("raw LLM answer", c.raw_text)];
  box.append(...parts.filter((p) => p !== null));
  box.scrollIntoView({ behavior: "instant", block: "start" });
}

// ------------------------------------------------------------------ start

refresh().then(() => {
  document.getElementById("subtitle").textContent = EMBED ? "report" : "live view";
  if (!EMBED) setInterval(refresh, POLL_MS);
});
