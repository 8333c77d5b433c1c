// zerotir rollout inspector: a dependency-free page over the samples embedded by zerotir/inspect/page.py.
// Everything model-written is inserted as text (never as HTML).
"use strict";
const DATA = JSON.parse(document.getElementById("zerotir-data").textContent);
const RUNS = DATA.runs;
const S = { run: 0, lo: null, hi: null, outcome: "", code: "", tool: "", finish: "", q: "",
            sel: null, view: "samples", mode: "mask", cmp: [null, null], cmpNote: "" };
const FAILED = new Set(["error", "timeout", "killed"]);
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c !== null && c !== undefined && c !== false)
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const svgEl = (tag, attrs) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
};
const fmt = (x, d = 3) => {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  return a > 0 && a < Math.pow(10, -d) ? Number(x).toExponential(1) : Number(x).toFixed(d);
};

// ---------------------------------------------------------------- samples: keys, derived fields
RUNS.forEach((run, r) => run.samples.forEach((s, i) => {
  s._key = r + ":" + i; s._run = r;
  const model = s.segments.filter((g) => g.role === "model").map((g) => g.text).join("\n");
  s._hay = [model, ...s.tool_calls.map((c) => c.code + "\n" + c.output), s.extracted_answer || "",
            s.gold_answer || "", s.prompt].join("\n").toLowerCase();
  s._question = questionOf(s.prompt);
}));
const byKey = (k) => { if (!k) return null; const [r, i] = k.split(":").map(Number); return RUNS[r] && RUNS[r].samples[i] || null; };

function questionOf(prompt) {
  const m = prompt.match(/(?:Question:|This is the problem:)\s*([\s\S]*?)(?:\n\s*(?:Answer|Assistant):|$)/);
  return (m ? m[1] : prompt.slice(-160)).trim();
}
function toolFlags(s) {
  const st = s.tool_calls.map((c) => c.status);
  return { error: st.some((x) => x === "error" || x === "killed"), timeout: st.includes("timeout"),
           failed: st.some((x) => FAILED.has(x)) };
}
function passes(s, ignoreRunStep) {
  if (!ignoreRunStep) {
    if (s._run !== S.run) return false;
    if (S.lo !== null && s.step < S.lo) return false;
    if (S.hi !== null && s.step > S.hi) return false;
  }
  if (S.outcome === "correct" && !s.correct) return false;
  if (S.outcome === "incorrect" && s.correct) return false;
  if (S.code === "yes" && !s.tool_calls.length) return false;
  if (S.code === "no" && s.tool_calls.length) return false;
  if (S.tool) {
    const f = toolFlags(s);
    if (S.tool === "clean" ? (!s.tool_calls.length || f.failed) : !f[S.tool]) return false;
  }
  if (S.finish && s.finish_reason !== S.finish) return false;
  if (S.q && !s._hay.includes(S.q.toLowerCase())) return false;
  return true;
}

// ---------------------------------------------------------------- URL hash: shareable views, links from report.html
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const num = (k) => (p.has(k) && p.get(k) !== "" ? Number(p.get(k)) : null);
  if (p.has("run")) S.run = Math.min(Math.max(0, num("run")), RUNS.length - 1);
  if (p.has("step")) { S.lo = S.hi = num("step"); }
  if (p.has("lo")) S.lo = num("lo");
  if (p.has("hi")) S.hi = num("hi");
  for (const k of ["outcome", "code", "tool", "finish", "q"]) if (p.has(k)) S[k] = p.get(k);
  if (p.has("sample")) S.sel = p.get("sample");
  S.view = p.get("view") === "compare" ? "compare" : "samples";
}
function writeHash() {
  const p = new URLSearchParams();
  p.set("run", S.run);
  if (S.lo !== null) p.set("lo", S.lo);
  if (S.hi !== null) p.set("hi", S.hi);
  for (const k of ["outcome", "code", "tool", "finish", "q"]) if (S[k]) p.set(k, S[k]);
  if (S.sel) p.set("sample", S.sel);
  if (S.view !== "samples") p.set("view", S.view);
  history.replaceState(null, "", "#" + p.toString());
}

// ---------------------------------------------------------------- controls
function initControls() {
  const runSel = $("f-run");
  RUNS.forEach((run, r) => runSel.append(el("option", { value: r }, `${run.label} (${run.samples.length})`)));
  const finishes = [...new Set(RUNS.flatMap((r) => r.samples.map((s) => s.finish_reason)))].sort();
  finishes.forEach((f) => $("f-finish").append(el("option", { value: f }, f)));
  const bind = (id, key, conv) => $(id).addEventListener("input", (e) => {
    S[key] = conv ? conv(e.target.value) : e.target.value; update();
  });
  bind("f-run", "run", Number);
  bind("f-lo", "lo", (v) => (v === "" ? null : Number(v)));
  bind("f-hi", "hi", (v) => (v === "" ? null : Number(v)));
  for (const [id, k] of [["f-outcome", "outcome"], ["f-code", "code"], ["f-tool", "tool"], ["f-finish", "finish"], ["f-q", "q"]]) bind(id, k);
  $("f-all").addEventListener("click", () => { S.lo = S.hi = null; update(); });
  document.querySelectorAll("header .tabs button").forEach((b) => b.addEventListener("click", () => {
    S.view = b.dataset.view; if (S.view === "compare" && !S.cmp[0]) autoCompare(); update();
  }));
  const n = RUNS.reduce((a, r) => a + r.samples.length, 0);
  const steps = RUNS.flatMap((r) => r.samples.map((s) => s.step));
  $("summary").textContent = `${RUNS.length} run${RUNS.length > 1 ? "s" : ""} · ${n} samples` +
    (steps.length ? ` · steps ${Math.min(...steps)}–${Math.max(...steps)}` : "") + ` · built ${DATA.generated}`;
}
function syncControls() {
  $("f-run").value = S.run;
  $("f-lo").value = S.lo ?? ""; $("f-hi").value = S.hi ?? "";
  for (const [id, k] of [["f-outcome", "outcome"], ["f-code", "code"], ["f-tool", "tool"], ["f-finish", "finish"]]) $(id).value = S[k];
  if (document.activeElement !== $("f-q")) $("f-q").value = S.q;
  $("tab-samples").classList.toggle("on", S.view === "samples");
  $("tab-compare").classList.toggle("on", S.view === "compare");
  $("samples-view").classList.toggle("hidden", S.view !== "samples");
  $("compare").classList.toggle("hidden", S.view !== "compare");
}

// ---------------------------------------------------------------- curves (click a step to see its samples)
const CURVE_KEYS = [["accuracy", "#1c8a4a", "accuracy"], ["code_ratio", "#3056d3", "code ratio"], ["tool_error_ratio", "#d35400", "tool errors"]];
function renderCurves() {
  const box = $("curves"); box.replaceChildren();
  RUNS.forEach((run, r) => {
    const steps = [...run.metrics.map((m) => m.step), ...run.samples.map((s) => s.step)];
    if (!steps.length) return;
    const x0 = Math.min(...steps), x1 = Math.max(...steps), W = 600, H = 78, pad = 4;
    const X = (s) => pad + (x1 === x0 ? 0.5 : (s - x0) / (x1 - x0)) * (W - 2 * pad);
    // fractions, scaled to the run's largest value so that a rise from 0.02 to 0.1 is visible
    const top = Math.max(0.05, ...run.metrics.flatMap((m) => CURVE_KEYS.map(([k]) => m[k] ?? 0))) * 1.08;
    const Y = (v) => H - 12 - (v / top) * (H - 20);
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-run": r });
    if (r === S.run && S.lo !== null) {
      const lo = S.lo, hi = S.hi ?? x1;
      svg.append(svgEl("rect", { x: X(lo) - 3, y: 0, width: Math.max(6, X(hi) - X(lo) + 6), height: H - 10, fill: "#3056d3", opacity: 0.12 }));
    }
    for (const [k, color] of CURVE_KEYS) {
      const pts = run.metrics.filter((m) => m[k] !== null && m[k] !== undefined);
      if (!pts.length) continue;
      svg.append(svgEl("polyline", { points: pts.map((m) => `${X(m.step)},${Y(m[k])}`).join(" "), fill: "none",
        stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke", opacity: 0.9 }));
    }
    for (const st of new Set(run.samples.map((s) => s.step)))
      svg.append(svgEl("rect", { x: X(st) - 1, y: H - 8, width: 2, height: 7, fill: "#17203a", opacity: 0.55 }));
    const hover = svgEl("line", { y1: 0, y2: H, stroke: "#17203a", "stroke-width": 1, "vector-effect": "non-scaling-stroke", opacity: 0 });
    svg.append(hover);
    const stepAt = (ev) => {
      const b = svg.getBoundingClientRect();
      const s = x0 + ((ev.clientX - b.left) / b.width * W - pad) / (W - 2 * pad) * (x1 - x0);
      const cands = [...new Set(steps)];
      return cands.reduce((a, c) => (Math.abs(c - s) < Math.abs(a - s) ? c : a), cands[0]);
    };
    svg.addEventListener("mousemove", (ev) => {
      const st = stepAt(ev); hover.setAttribute("x1", X(st)); hover.setAttribute("x2", X(st)); hover.setAttribute("opacity", 0.5);
      const m = run.metrics.find((q) => q.step === st) || {};
      const n = run.samples.filter((s) => s.step === st).length;
      showTip(ev, `step ${st}  (${n} samples; click to show)\n` + CURVE_KEYS.map(([k, , lab]) => `${lab.padEnd(12)} ${fmt(m[k])}`).join("\n"));
    });
    svg.addEventListener("mouseleave", () => { hover.setAttribute("opacity", 0); hideTip(); });
    svg.addEventListener("click", (ev) => { S.run = r; S.lo = S.hi = stepAt(ev); S.sel = null; S.view = "samples"; update(); });
    const keys = CURVE_KEYS.map(([, c, lab]) => el("span", {}, el("span", { class: "key", style: `background:${c}` }), lab));
    box.append(el("div", { class: "curve" + (r === S.run ? " cur" : "") },
      el("div", { class: "ttl" }, el("b", {}, run.label), ...keys, el("span", {}, `· y 0–${fmt(top, 2)} · ticks: sampled steps, click one`)), svg));
  });
}

// ---------------------------------------------------------------- list
function badges(s) {
  const f = toolFlags(s), out = [el("span", { class: "badge step", title: `policy version ${s.policy_version}, prompt group ${s.group_id}` }, "step " + s.step)];
  out.push(el("span", { class: "badge " + (s.correct ? "ok" : "bad") }, s.correct ? "✓ correct" : "✗ incorrect"));
  if (s.tool_calls.length) out.push(el("span", { class: "badge code" }, `code ×${s.tool_calls.length}`));
  if (f.error) out.push(el("span", { class: "badge err" }, "tool error"));
  if (f.timeout) out.push(el("span", { class: "badge err" }, "timeout"));
  if (s.finish_reason !== "stop") out.push(el("span", { class: "badge dim" }, s.finish_reason));
  if (!s.trained) out.push(el("span", { class: "badge dim", title: "filtered out or excluded: not in the update" }, "not trained"));
  return out;
}
function filtered() { return RUNS[S.run] ? RUNS[S.run].samples.filter((s) => passes(s)) : []; }
function renderList() {
  const list = $("list"), items = filtered(), cap = 400;
  list.replaceChildren(el("div", { class: "count", id: "count" },
    `${items.length} of ${RUNS[S.run] ? RUNS[S.run].samples.length : 0} samples` + (items.length > cap ? ` (first ${cap} shown)` : ""),
    el("span", { style: "float:right" }, "j / k to move")));
  if (items.length && !items.some((s) => s._key === S.sel)) S.sel = items[0]._key;
  if (!items.length) S.sel = null;
  for (const s of items.slice(0, cap)) {
    list.append(el("div", { class: "card" + (s._key === S.sel ? " sel" : ""), "data-key": s._key,
      onclick: () => { S.sel = s._key; update(); } },
      el("div", { class: "row1" }, badges(s)),
      el("div", { class: "q", title: s._question }, s._question),
      el("div", { class: "ans" }, `→ ${s.extracted_answer ?? "(no answer)"}   gold ${s.gold_answer}`)));
  }
}

// ---------------------------------------------------------------- one trajectory
const PY_RE = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|\b(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\b|\b(def|class|return|if|elif|else|for|while|in|not|and|or|import|from|as|with|try|except|finally|raise|lambda|yield|pass|break|continue|None|True|False|is|global|nonlocal|assert|del)\b|\b(print|range|len|sum|min|max|abs|int|float|str|list|dict|set|tuple|sorted|enumerate|zip|map|round|pow|divmod|math|sympy)\b|\b([A-Za-z_]\w*)(?=\s*\()/g;
const PY_CLASS = [null, "com", "str", "num", "kw", "bi", "fn"];
function highlightPython(code) {
  const frag = document.createDocumentFragment(); let last = 0;
  for (const m of code.matchAll(PY_RE)) {
    if (m.index > last) frag.append(code.slice(last, m.index));
    const g = m.findIndex((x, i) => i > 0 && x !== undefined);
    frag.append(el("span", { class: PY_CLASS[g] }, m[0])); last = m.index + m[0].length;
  }
  frag.append(code.slice(last)); return frag;
}
function marked(text) {
  if (!S.q) return document.createTextNode(text);
  const frag = document.createDocumentFragment(), low = text.toLowerCase(), q = S.q.toLowerCase();
  let i = 0, j;
  while ((j = low.indexOf(q, i)) >= 0) { frag.append(text.slice(i, j), el("mark", {}, text.slice(j, j + q.length))); i = j + q.length; }
  frag.append(text.slice(i)); return frag;
}
const FENCE_RE = /```python\n?([\s\S]*?)(```|$)/g;
function renderModelText(text) {
  const box = el("div", { class: "seg-model" }); let last = 0;
  for (const m of text.matchAll(FENCE_RE)) {
    if (m.index > last) box.append(el("pre", { class: "text" }, marked(text.slice(last, m.index))));
    box.append(el("div", { class: "codeblock" }, el("span", { class: "lang" }, m[2] ? "python · model-written" : "python · unclosed"),
      el("pre", {}, highlightPython(m[1].replace(/\n$/, "")))));
    last = m.index + m[0].length;
  }
  if (last < text.length) box.append(el("pre", { class: "text" }, marked(text.slice(last))));
  return box;
}
function renderResponse(s) {
  const box = el("div", { class: "resp" }); let call = 0;
  for (const g of s.segments) {
    if (g.role === "model") box.append(renderModelText(g.text));
    else if (g.role === "tool") {
      const c = s.tool_calls[call++];
      box.append(el("div", { class: "seg-tool", "data-role": "tool" },
        el("div", { class: "seg-label" }, "sandbox output · injected", el("span", { class: "nt" }, "not trained on"),
          c ? el("span", {}, `call ${call} · ${c.status} · ${fmt(c.seconds, 3)} s`) : null),
        el("pre", {}, marked(g.text.replace(/^\n+|\n+$/g, "")))));
    } else {
      box.append(el("div", { class: "seg-notice", "data-role": "notice" },
        el("div", { class: "seg-label" }, "notice · injected", el("span", { class: "nt" }, "not trained on")),
        el("pre", {}, g.text.trim())));
    }
  }
  return box;
}
function renderCalls(s) {
  if (!s.tool_calls.length) return null;
  return el("table", { class: "calls" },
    el("tr", {}, el("th", {}, "#"), el("th", {}, "status"), el("th", {}, "seconds"), el("th", {}, "exit"), el("th", {}, "stderr (tail)")),
    s.tool_calls.map((c, i) => el("tr", {}, el("td", {}, i + 1),
      el("td", {}, el("span", { class: "badge " + (FAILED.has(c.status) ? "err" : "ok") }, c.status)),
      el("td", {}, fmt(c.seconds, 3)), el("td", {}, c.exit_code),
      el("td", {}, el("code", {}, (c.stderr || "").split("\n").filter(Boolean).slice(-2).join("\n") || "–")))));
}
function renderVerdict(s) {
  const ok = s.correct;
  return el("div", { class: "verdict " + (ok ? "ok" : "bad") },
    el("div", { class: "big" }, (ok ? "✓ graded correct" : "✗ graded incorrect") + ` · reward ${fmt(s.reward, 2)}`),
    el("div", { class: "k" }, "extracted"), el("div", { class: "v", "data-field": "extracted" }, s.extracted_answer ?? "(no \\boxed answer)"),
    el("div", { class: "k" }, "gold"), el("div", { class: "v", "data-field": "gold" }, s.gold_answer));
}
function renderDetail(box, s, compact) {
  box.replaceChildren();
  if (!s) { box.append(el("div", { class: "empty" }, "No sample matches these filters.")); return; }
  const run = RUNS[s._run];
  box.append(el("div", { class: "dhead" },
    el("span", { class: "run" }, run.label), badges(s),
    el("span", { class: "badge dim" }, `policy v${s.policy_version}`),
    el("span", { class: "badge dim" }, `${s.model_tokens} model / ${s.total_tokens} total tokens`),
    compact ? null : el("span", { class: "actions" },
      el("button", { id: "btn-same-prompt", onclick: () => { compareSamePrompt(s); update(); } }, "compare: same question elsewhere"),
      el("button", { onclick: () => { S.cmp = [s._key, S.cmp[1]]; S.view = "compare"; update(); } }, "pin left"),
      el("button", { onclick: () => { S.cmp = [S.cmp[0], s._key]; S.view = "compare"; update(); } }, "pin right"))));
  box.append(renderVerdict(s));
  box.append(el("details", { class: "prompt" }, el("summary", {}, `prompt (${s.prompt_tokens} tokens)`), el("pre", {}, s.prompt)));
  box.append(el("h3", {}, "response"), renderResponse(s));
  const calls = renderCalls(s);
  if (calls) box.append(el("h3", {}, "tool calls"), calls);
  box.append(el("h3", {}, "tokens"), renderTokens(s));
}

// ---------------------------------------------------------------- token view
const MODES = {
  mask: "action mask",
  gap: "|rollout − trainer| logprob",
  adv: "advantage",
  surprisal: "rollout surprisal (−logprob)",
};
function tokenRoles(s) {
  const roles = new Array(s.tokens.ids.length).fill("model");
  for (const g of s.segments) for (let k = g.start; k < g.end; k++) roles[k] = g.role;
  return roles;
}
const SCALES = {};
function runScale(r, what) {
  const key = r + what;
  if (!(key in SCALES)) {
    let m = 0;
    for (const s of RUNS[r].samples) {
      const t = s.tokens;
      if (what === "gap" && !t.trainer_logprobs) continue;
      if (what === "adv" && !t.advantages) continue;
      for (let k = 0; k < t.ids.length; k++) if (t.mask[k])
        m = Math.max(m, what === "gap" ? Math.abs(t.rollout_logprobs[k] - t.trainer_logprobs[k]) : Math.abs(t.advantages[k]));
    }
    SCALES[key] = m;
  }
  return SCALES[key];
}
function renderTokens(s) {
  const t = s.tokens, roles = tokenRoles(s), n = t.ids.length;
  const avail = { mask: true, gap: !!t.trainer_logprobs, adv: !!t.advantages, surprisal: !!t.rollout_logprobs };
  const mode = avail[S.mode] ? S.mode : "mask";
  const onModel = (arr, f) => { let m = 0; for (let k = 0; k < n; k++) if (t.mask[k]) m = Math.max(m, f(arr, k)); return m; };
  const gap = (k) => Math.abs(t.rollout_logprobs[k] - t.trainer_logprobs[k]);
  // gap and advantage share one scale per run, so colours compare across samples and steps
  const scale = mode === "gap" ? Math.max(1e-3, runScale(s._run, "gap"))
    : mode === "adv" ? (onModel(t.advantages, (a, k) => Math.abs(a[k])) > 1e-6 ? runScale(s._run, "adv") : 0)
    : mode === "surprisal" ? Math.max(1e-3, onModel(t.rollout_logprobs, (a, k) => -a[k])) : 1;
  const colour = (k) => {
    if (mode === "mask") return roles[k] === "model" ? "rgba(28,138,74,.16)" : roles[k] === "notice" ? "rgba(217,164,0,.32)" : "rgba(124,141,214,.30)";
    if (!t.mask[k]) return "rgba(150,155,170,.16)";
    if (mode === "gap") return `rgba(192,57,43,${(0.05 + 0.85 * gap(k) / scale).toFixed(3)})`;
    if (mode === "surprisal") return `rgba(123,63,191,${(0.04 + 0.8 * -t.rollout_logprobs[k] / scale).toFixed(3)})`;
    const a = t.advantages[k] / scale;
    return a >= 0 ? `rgba(28,138,74,${(0.05 + 0.75 * a).toFixed(3)})` : `rgba(192,57,43,${(0.05 + 0.75 * -a).toFixed(3)})`;
  };
  const sel = el("select", { class: "tok-mode", oninput: (e) => { S.mode = e.target.value; update(); } },
    Object.entries(MODES).map(([k, lab]) => el("option", { value: k, selected: k === mode, disabled: !avail[k] }, lab + (avail[k] ? "" : " (not recorded)"))));
  const legend = el("span", { class: "legend" });
  if (mode === "mask") legend.append(el("span", { class: "sw", style: "background:rgba(28,138,74,.16)" }), "model, trained (1)",
    el("span", { class: "sw", style: "background:rgba(124,141,214,.30)" }), "sandbox output (0)",
    el("span", { class: "sw", style: "background:rgba(217,164,0,.32)" }), "notice (0)");
  else if (mode === "adv" && scale <= 1e-6) legend.append("every advantage is 0: the group's rewards were all equal, so this sample gives no gradient");
  else if (mode === "adv") legend.append(`−${fmt(scale, 3)}`, el("span", { class: "grad", style: "background:linear-gradient(90deg,rgba(192,57,43,.8),#fff,rgba(28,138,74,.8))" }), `+${fmt(scale, 3)} (run max; injected grey)`);
  else legend.append("0", el("span", { class: "grad", style: `background:linear-gradient(90deg,#fff,${mode === "gap" ? "rgba(192,57,43,.9)" : "rgba(123,63,191,.85)"})` }), fmt(scale, 4), mode === "gap" ? " (run max; injected tokens grey)" : " (this sample's max; injected grey)");
  const stats = [];
  if (avail.gap) {
    let m = 0, c = 0; for (let k = 0; k < n; k++) if (t.mask[k]) { m += gap(k); c++; }
    stats.push(`this sample: mean |Δ| ${fmt(c ? m / c : 0, 4)} · max ${fmt(onModel(null, (_, k) => gap(k)), 4)}`);
  }
  const view = el("div", { class: "tokens", "data-mode": mode });
  const frag = document.createDocumentFragment();
  for (let k = 0; k < n; k++) {
    const txt = t.text[k], kids = txt.includes("\n") ? txt.split("\n").flatMap((p, i) => (i ? [el("span", { class: "nl" }, "↵"), "\n", p] : [p])) : [txt];
    frag.append(el("span", { class: "tok" + (t.mask[k] ? "" : " inj"), "data-k": k, "data-role": roles[k], style: `background:${colour(k)}` }, ...kids));
  }
  view.append(frag);
  view.addEventListener("mousemove", (ev) => {
    const sp = ev.target.closest(".tok"); if (!sp) { hideTip(); return; }
    const k = Number(sp.dataset.k), r = t.rollout_logprobs ? t.rollout_logprobs[k] : null, tr = t.trainer_logprobs ? t.trainer_logprobs[k] : null;
    showTip(ev, [`token ${k}  id ${t.ids[k]}  ${JSON.stringify(t.text[k])}`,
      `${roles[k]}  mask ${t.mask[k]}${t.mask[k] ? "  (trained)" : "  (injected, not trained on)"}`,
      `rollout logprob  ${t.mask[k] ? fmt(r, 4) : "–"}`, `trainer logprob  ${tr === null ? "not recorded" : fmt(tr, 4)}`,
      `|Δ|              ${t.mask[k] && tr !== null ? fmt(Math.abs(r - tr), 4) : "–"}`,
      `advantage        ${t.advantages ? fmt(t.advantages[k], 4) : "not trained"}`].join("\n"));
  });
  view.addEventListener("mouseleave", hideTip);
  return el("div", {}, el("div", { class: "tokbar" }, "colour by", sel, legend, stats.length ? el("span", {}, stats.join(" ")) : null), view);
}
function showTip(ev, text) {
  const tip = $("tip"); tip.textContent = text; tip.style.display = "block";
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8), y = ev.clientY + 16 + tip.offsetHeight > window.innerHeight ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 16;
  tip.style.left = x + "px"; tip.style.top = y + "px";
}
function hideTip() { $("tip").style.display = "none"; }

// ---------------------------------------------------------------- compare: same prompt early vs late, two runs
const all = () => RUNS.flatMap((r) => r.samples);
// Samples are matched by their question (the problem text), so runs with different templates
// (ZeroTIR's prompt names the tool, ZeroRL's does not) still line up.
function compareSamePrompt(s) {
  const same = all().filter((o) => o._question === s._question && o._key !== s._key);
  const otherRun = same.filter((o) => o._run !== s._run).sort((a, b) => Math.abs(a.step - s.step) - Math.abs(b.step - s.step));
  const otherStep = same.filter((o) => o.step !== s.step).sort((a, b) => Math.abs(b.step - s.step) - Math.abs(a.step - s.step));
  const pick = otherRun[0] || otherStep[0] || same[0];
  S.cmp = [s._key, pick ? pick._key : null];
  S.cmpNote = pick ? `Same question: ${RUNS[s._run].label} step ${s.step} vs ${RUNS[pick._run].label} step ${pick.step}.`
    : "No other sample of this question was recorded (another step, run or group member).";
  S.view = "compare";
}
function earlyLate(r) {
  const by = new Map();
  for (const s of RUNS[r].samples.filter((x) => passes(x, true))) (by.get(s._question) || by.set(s._question, []).get(s._question)).push(s);
  let best = null;
  for (const list of by.values()) {
    list.sort((a, b) => a.step - b.step);
    const span = list[list.length - 1].step - list[0].step;
    if (span > 0 && (!best || span > best[2])) best = [list[0], list[list.length - 1], span];
  }
  if (best) { S.cmp = [best[0]._key, best[1]._key]; S.cmpNote = `Same question, step ${best[0].step} vs step ${best[1].step}.`; return; }
  const steps = RUNS[r].samples.map((s) => s.step), lo = Math.min(...steps), hi = Math.max(...steps);
  const first = RUNS[r].samples.find((s) => s.step === lo && passes(s, true)), last = RUNS[r].samples.filter((s) => s.step === hi && passes(s, true)).pop();
  S.cmp = [first && first._key, last && last._key];
  S.cmpNote = "No question of this run was sampled at two different steps (questions repeat only across epochs); showing the earliest and latest step instead.";
}
function twoRuns(step) {
  if (RUNS.length < 2) { S.cmpNote = "Only one run loaded: pass two run directories to zerotir inspect."; return; }
  const left = byKey(S.cmp[0]), r0 = left ? left._run : 0, r1 = r0 === 0 ? 1 : 0;
  const a = RUNS[r0].samples.filter((s) => (step === null || s.step === step) && passes(s, true));
  if (left && a.includes(left)) a.unshift(left);
  for (const s of a) {
    const b = RUNS[r1].samples.find((o) => o._question === s._question && o.step === s.step);
    if (b) { S.cmp = [s._key, b._key]; S.cmpNote = `Same question at step ${s.step}: ${RUNS[r0].label} vs ${RUNS[r1].label}.`; return; }
  }
  const b = RUNS[r1].samples.find((o) => step === null || o.step === step);
  S.cmp = [a[0] && a[0]._key, b && b._key]; S.cmpNote = "No question shared at this step; showing the first sample of each run.";
}
function autoCompare() {
  const s = byKey(S.sel);
  if (RUNS.length > 1) twoRuns(s ? s.step : null); else earlyLate(S.run);
}
function renderCompare() {
  const box = $("compare"); box.replaceChildren();
  box.append(el("div", { class: "cmpbar" },
    el("button", { id: "cmp-early-late", onclick: () => { earlyLate(S.run); update(); } }, "same question: earliest vs latest step"),
    el("button", { id: "cmp-two-runs", onclick: () => { const s = byKey(S.cmp[0]); twoRuns(s ? s.step : null); update(); } }, "two runs, same step"),
    el("button", { onclick: () => { S.cmp = [S.cmp[1], S.cmp[0]]; update(); } }, "swap"),
    el("span", { id: "cmp-note" }, S.cmpNote)));
  [0, 1].forEach((side) => {
    const cur = byKey(S.cmp[side]), col = el("div", { class: "col", "data-side": side });
    const r = cur ? cur._run : Math.min(side, RUNS.length - 1);
    const runSel = el("select", { oninput: (e) => { const rr = Number(e.target.value); const f = RUNS[rr].samples.find((s) => passes(s, true)); S.cmp[side] = f ? f._key : null; update(); } },
      RUNS.map((run, i) => el("option", { value: i, selected: i === r }, run.label)));
    const steps = [...new Set(RUNS[r].samples.map((s) => s.step))].sort((a, b) => a - b);
    const stepSel = el("select", { oninput: (e) => { const st = Number(e.target.value); const f = RUNS[r].samples.find((s) => s.step === st && passes(s, true)) || RUNS[r].samples.find((s) => s.step === st); S.cmp[side] = f ? f._key : null; update(); } },
      steps.map((st) => el("option", { value: st, selected: cur && cur.step === st }, "step " + st)));
    const pool = RUNS[r].samples.filter((s) => (!cur || s.step === cur.step) && (passes(s, true) || s === cur));
    const sampleSel = el("select", { oninput: (e) => { S.cmp[side] = e.target.value; update(); } },
      pool.map((s) => el("option", { value: s._key, selected: s === cur }, `${s.correct ? "✓" : "✗"}${s.tool_calls.length ? " code" : ""} · ${s._question.slice(0, 60)}`)));
    col.append(el("div", { class: "colhead" }, side ? "right" : "left", runSel, stepSel, sampleSel));
    const body = el("div", {}); renderDetail(body, cur, true); col.append(body); box.append(col);
  });
}

// ---------------------------------------------------------------- main
function update() {
  writeHash(); syncControls(); renderCurves();
  if (S.view === "samples") { renderList(); renderDetail($("detail"), byKey(S.sel), false); writeHash(); }
  else renderCompare();
}
readHash(); initControls();
window.addEventListener("hashchange", () => { readHash(); update(); });
// j / k or the arrow keys walk the list; Escape clears the search
document.addEventListener("keydown", (ev) => {
  if (ev.target.matches("input, select, textarea")) { if (ev.key === "Escape") { S.q = ""; $("f-q").blur(); update(); } return; }
  if (S.view !== "samples") return;
  const items = filtered(), i = items.findIndex((s) => s._key === S.sel);
  const d = ev.key === "j" || ev.key === "ArrowDown" ? 1 : ev.key === "k" || ev.key === "ArrowUp" ? -1 : 0;
  if (!d || !items.length) return;
  ev.preventDefault();
  S.sel = items[Math.min(items.length - 1, Math.max(0, i + d))]._key; update();
  const c = document.querySelector(`#list .card[data-key="${S.sel}"]`); if (c) c.scrollIntoView({ block: "nearest" });
});
update();
