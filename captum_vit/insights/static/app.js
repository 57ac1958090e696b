// captum_vit insights: the page. Plain JavaScript, no build step.
"use strict";

const state = { config: null, image: null, imageTitle: "", model: 0, target: null, job: null,
                prompts: null };

// The prompts of a vision-language model, sent with every request.
function withPrompts(body) {
  if (state.config && state.config.text) body.prompts = state.prompts;
  return body;
}

function $(id) { return document.getElementById(id); }

function el(tag, props, children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children || []) e.append(c);
  return e;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!isError);
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    throw new Error((data && data.message) || `${resp.status} ${resp.statusText}`);
  }
  return data;
}

// ------------------------------------------------------------------ methods
function paramInput(method, p) {
  const id = `param-${method.name}-${p.name}`;
  let input;
  if (p.choices) {
    input = el("select", { id });
    for (const c of p.choices) input.append(el("option", { value: c, textContent: c }));
    input.value = p.default;
  } else if (p.type === "bool") {
    input = el("input", { id, type: "checkbox", checked: !!p.default });
  } else if (p.type === "int" || p.type === "float") {
    input = el("input", { id, type: "number", step: p.type === "int" ? "1" : "any" });
    if (p.min !== undefined) input.min = String(p.min);
    if (p.max !== undefined) input.max = String(p.max);
    input.value = p.default === null ? "" : String(p.default);
    if (p.nullable) input.placeholder = "none";
  } else {
    input = el("input", { id, type: "text", value: p.default === null ? "" : p.default });
  }
  input.dataset.param = p.name;
  input.dataset.type = p.type;
  return el("label", { className: "param" }, [el("span", { textContent: p.name }), input]);
}

function buildMethods() {
  const box = $("methods");
  box.replaceChildren();
  const preselected = new Set(state.config.preselected || []);
  state.config.methods.forEach((m) => {
    const cb = el("input", { type: "checkbox", id: `method-${m.name}`, value: m.name,
                              checked: preselected.has(m.name) && m.available,
                              disabled: !m.available });
    const label = el("label", { htmlFor: cb.id, title: m.doc || m.reason },
                     [` ${m.title} `, el("code", { textContent: m.name })]);
    const div = el("div", { className: "method" }, [cb, label]);
    div.dataset.method = m.name;
    if (m.params.length) {
      const details = el("details", {}, [el("summary", { textContent: "parameters" })]);
      for (const p of m.params) details.append(paramInput(m, p));
      div.append(details);
    }
    if (!m.available) div.append(el("div", { className: "error-text", textContent: m.reason }));
    box.append(div);
  });
}

function selectedMethods() {
  const out = [];
  for (const div of $("methods").querySelectorAll(".method")) {
    const cb = div.querySelector("input[type=checkbox]");
    if (!cb.checked) continue;
    const params = {};
    for (const input of div.querySelectorAll("[data-param]")) {
      const name = input.dataset.param;
      if (input.type === "checkbox") params[name] = input.checked;
      else if (input.dataset.type === "int" || input.dataset.type === "float") {
        params[name] = input.value === "" ? null : Number(input.value);
      } else params[name] = input.value;
    }
    out.push({ name: div.dataset.method, params });
  }
  return out;
}

// ------------------------------------------------------------------- images
async function loadSamples() {
  const data = await api("/api/samples");
  const box = $("samples");
  box.replaceChildren();
  for (const s of data.samples) {
    const img = el("img", { className: "sample", src: `/api/images/${s.id}.png`,
                            alt: s.label_name || s.id, title: `${s.id}: ${s.label_name || ""}` });
    img.dataset.image = s.id;
    const title = s.label_name ? `sample ${s.id.slice(1)} (${s.label_name})` : `sample ${s.id.slice(1)}`;
    img.addEventListener("click", () => selectImage(s.id, title));
    box.append(img);
  }
}

async function selectImage(id, title) {
  state.image = id;
  state.imageTitle = title;
  for (const img of document.querySelectorAll(".sample")) {
    img.classList.toggle("selected", img.dataset.image === id);
  }
  const sel = $("selected-image");
  sel.src = `/api/images/${id}.png`;
  sel.hidden = false;
  $("overlays").replaceChildren();
  $("heads").replaceChildren();
  $("scores").replaceChildren();
  await predict();
}

async function predict() {
  setStatus("predicting…");
  try {
    const data = await api("/api/predict", withPrompts({ image: state.image, model: state.model }));
    $("true-label").textContent = data.label_name ? `true class: ${data.label_name}` : "";
    const body = $("predictions").querySelector("tbody");
    body.replaceChildren();
    for (const p of data.predictions) {
      const tr = el("tr", {}, [el("td", { textContent: p.label }),
                               el("td", { textContent: p.score.toFixed(3) })]);
      tr.dataset.index = p.index;
      tr.addEventListener("click", () => setTarget(p.index));
      body.append(tr);
    }
    setTarget(data.predictions[0].index);
    for (const b of ["explain-btn", "scores-btn", "attention-btn"]) $(b).disabled = false;
    setStatus(`${state.imageTitle}: ready`);
  } catch (e) {
    setStatus(`prediction failed: ${e.message}`, true);
  }
}

function setTarget(index) {
  state.target = index;
  $("target-select").value = String(index);
  for (const tr of $("predictions").querySelectorAll("tbody tr")) {
    tr.classList.toggle("target", Number(tr.dataset.index) === index);
  }
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  setStatus("uploading…");
  try {
    const resp = await fetch("/api/upload", { method: "POST", body: form });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.message);
    await selectImage(data.image, `uploaded image "${file.name}"`);
  } catch (e) {
    setStatus(`upload refused: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------ explain
async function explain() {
  const methods = selectedMethods();
  if (!methods.length) { setStatus("choose at least one method", true); return; }
  const btn = $("explain-btn");
  btn.disabled = true;
  setStatus(`explaining with ${methods.length} method(s)…`);
  try {
    const data = await api("/api/explain", withPrompts({
      image: state.image, model: state.model, target: state.target, methods }));
    const box = $("overlays");
    box.replaceChildren();
    for (const o of data.overlays) {
      const fig = el("figure", { className: "overlay" }, [
        el("img", { src: o.image, alt: o.label }),
        el("figcaption", { textContent: `${o.label} (${o.seconds.toFixed(2)} s)` }),
      ]);
      fig.dataset.method = o.method;
      box.append(fig);
    }
    setStatus(`explained ${state.config.text ? "prompt" : "class"} "${data.target_name}"`);
  } catch (e) {
    setStatus(`explanation failed: ${e.message}`, true);
  } finally {
    btn.disabled = false;
  }
}

// ------------------------------------------------------------------- scores
function cancelJob(id, keepalive) {
  if (!id) return;
  fetch(`/api/jobs/${id}`, { method: "DELETE", keepalive: !!keepalive }).catch(() => {});
}

// What the progress line says about a job.
function jobLabel(job) {
  const count = `${job.done}/${job.total} steps`;
  switch (job.state) {
    case "queued": return "waiting for a free model…";
    case "running": return `${job.message} (${count})`;
    case "done": return `finished (${count})`;
    case "cancelled": return `cancelled (${count})`;
    default: return `failed: ${job.error}`;
  }
}

async function scores() {
  const methods = selectedMethods();
  if (!methods.length) { setStatus("choose at least one method", true); return; }
  cancelJob(state.job);
  state.job = null;
  try {
    const job = await api("/api/scores", withPrompts({
      image: state.image, model: state.model, target: state.target, methods,
      n_steps: Number($("n-steps").value) }));
    state.job = job.id;
    $("job").hidden = false;
    $("scores").replaceChildren();
    pollJob(job.id);
  } catch (e) {
    setStatus(`scores refused: ${e.message}`, true);
  }
}

async function pollJob(id) {
  if (state.job !== id) return;
  let job;
  try { job = await api(`/api/jobs/${id}`); } catch (e) {
    setStatus(`job lost: ${e.message}`, true); return;
  }
  $("job-progress").value = job.progress;
  $("job-message").textContent = jobLabel(job);
  if (job.state === "done") { showScores(job.result); setStatus("scores ready"); return; }
  if (job.state === "error" || job.state === "cancelled") {
    setStatus(`scores ${job.state === "error" ? "failed" : "cancelled"}: ${job.error}`, true);
    return;
  }
  setTimeout(() => pollJob(id), 300);
}

function showScores(result) {
  const head = el("tr", {}, [el("th", { textContent: "method" })]);
  for (const m of result.metrics) {
    head.append(el("th", {}, [m.title, el("div", { className: "better",
                                                   textContent: `${m.better} is better` })]));
  }
  const table = el("table", { id: "scores-table" }, [el("thead", {}, [head])]);
  const body = el("tbody");
  for (const row of result.rows) {
    const tr = el("tr", {}, [el("td", { textContent: row.label })]);
    for (const m of result.metrics) {
      const vals = result.rows.map((r) => r.scores[m.name]);
      const best = m.better === "lower" ? Math.min(...vals) : Math.max(...vals);
      const v = row.scores[m.name];
      tr.append(el("td", { textContent: v.toFixed(3),
                            className: result.rows.length > 1 && v === best ? "best" : "" }));
    }
    body.append(tr);
  }
  table.append(body);
  $("scores").replaceChildren(
    el("div", { textContent: `${state.config.text ? "prompt" : "class"} "${result.target_name}"` }),
    table);
}

// ---------------------------------------------------------------- attention
async function attention() {
  setStatus("reading attention…");
  try {
    const data = await api("/api/attention", {
      image: state.image, model: state.model, layer: Number($("layer-select").value),
      view: $("view-select").value });
    const box = $("heads");
    box.replaceChildren();
    data.heads.forEach((src, h) => box.append(el("figure", { className: "head" }, [
      el("img", { src, alt: `head ${h}` }), el("figcaption", { textContent: `head ${h}` })])));
    box.append(el("figure", { className: "head" }, [
      el("img", { src: data.mean, alt: "mean" }), el("figcaption", { textContent: "mean of heads" })]));
    setStatus(`layer ${data.layer}: ${data.num_heads} heads`);
  } catch (e) {
    setStatus(`attention failed: ${e.message}`, true);
  }
}

function fillTargets(names) {
  const ts = $("target-select");
  ts.replaceChildren();
  names.forEach((c, i) => ts.append(
    el("option", { value: String(i), textContent: `${i}: ${c}` })));
}

async function usePrompts() {
  const prompts = $("prompts-input").value.split("\n").map((p) => p.trim()).filter((p) => p);
  if (!prompts.length) { setStatus("write at least one prompt", true); return; }
  if (prompts.length > state.config.max_prompts) {
    setStatus(`at most ${state.config.max_prompts} prompts`, true); return;
  }
  state.prompts = prompts;
  fillTargets(prompts);
  $("overlays").replaceChildren();
  $("scores").replaceChildren();
  if (state.image) await predict();
  else setStatus(`${prompts.length} prompt(s); pick an image`);
}

function buildModelControls() {
  const m = state.config.models[state.model];
  const layer = $("layer-select");
  layer.replaceChildren();
  for (let i = 0; i < m.num_layers; i++) {
    layer.append(el("option", { value: String(i), textContent: String(i) }));
  }
  layer.value = String(m.num_layers - 1);
}

// --------------------------------------------------------------------- init
async function init() {
  try {
    state.config = await api("/api/config");
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`, true);
    return;
  }
  const ms = $("model-select");
  state.config.models.forEach((m, i) => ms.append(
    el("option", { value: String(i), textContent: `${m.name} (${m.family})` })));
  ms.addEventListener("change", () => {
    state.model = Number(ms.value);
    buildModelControls();
    if (state.image) predict();
  });
  const ts = $("target-select");
  fillTargets(state.config.classes);
  ts.addEventListener("change", () => setTarget(Number(ts.value)));
  if (state.config.text) {
    // a vision-language model: the targets are prompts the user writes
    state.prompts = state.config.classes.slice();
    $("prompts-box").hidden = false;
    $("prompts-input").value = state.prompts.join("\n");
    $("target-label").firstChild.textContent = "Target prompt ";
    $("predictions").querySelector("th").textContent = "prompt";
    $("prompts-btn").addEventListener("click", usePrompts);
  }
  buildModelControls();
  buildMethods();
  $("explain-btn").addEventListener("click", explain);
  $("scores-btn").addEventListener("click", scores);
  $("attention-btn").addEventListener("click", attention);
  $("upload-input").addEventListener("change", (ev) => {
    if (ev.target.files.length) upload(ev.target.files[0]);
  });
  window.addEventListener("pagehide", () => cancelJob(state.job, true));
  await loadSamples();
  setStatus("pick an image");
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", init);
