// minicream web page: a form over POST /api/generate, an image editor over POST /api/edit (paint a mask; the modes
// that take an image, with their inputs built from /api/models by modes.js), a result grid and a session history;
// ratings of results: feedback.js.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY_KEY = "minicream.history";
let features = {};
let imageSize = 64;
let maxNoiseDefault = 1;  // the loaded model's guidance_max_noise
let cadsDefault = 0;  // the loaded model's condition-annealing scale
const layout = { boxes: [], drag: null };

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(path, body) {
  const opts = body === undefined ? { headers: headers(false) } : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    let msg = (data && data.error && data.error.message) || res.statusText || ("HTTP " + res.status);
    if (res.status === 401) msg = "This server needs an API token: enter it at the top right. (" + msg + ")";
    if (res.status === 429) msg = "The server is busy (queue full); try again in " + (res.headers.get("Retry-After") || "a few") + " s.";
    const err = new Error(msg); err.status = res.status; throw err;
  }
  return data;
}

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }
let models = [];

function applyModel(m) {
  features = m.features || {};
  imageSize = m.image_size || 64;
  $("layout-panel").hidden = !features.layout;
  $("model-info").textContent = `model ${m.name} · ${m.image_size}×${m.image_size} px · ${m.model_hash || ""}`
    + (m.kind ? ` · ${m.kind}${m.teacher ? " of " + m.teacher : ""}` : "");
  const sel = $("sampler"); sel.innerHTML = "";
  for (const s of m.samplers) { const o = document.createElement("option"); o.value = o.textContent = s; sel.appendChild(o); }
  const d = m.defaults || {};
  if (d.sampler) sel.value = d.sampler;
  if (d.steps) $("steps").value = d.steps;
  if (d.guidance !== undefined) $("guidance").value = d.guidance;
  maxNoiseDefault = d.guidance_max_noise !== undefined ? d.guidance_max_noise : 1;
  $("guidance_max_noise").value = maxNoiseDefault;
  cadsDefault = d.cads !== undefined ? d.cads : 0;
  $("cads").value = cadsDefault;
  $("guidance_max_noise").disabled = features.guidance_max_noise === false;  // not sent when the pipeline lacks it
  $("cads").disabled = features.cads === false;
  $("num_candidates").disabled = !features.num_candidates;
  if (!features.num_candidates) $("num_candidates").title = "this server's pipeline has no best-of-N";
  feedbackModel(features);
  adaptersModel(m);
  sketchModel(m);
  storyModel(m);
  imagePromptModel(m);
  if (features.filter) {
    const f = $("filter"); f.innerHTML = "";
    const modes = features.filter_modes && features.filter_modes.length ? features.filter_modes : [features.filter_default || ""];
    for (const mode of modes) { const o = document.createElement("option"); o.value = mode; o.textContent = mode || "(default)"; f.appendChild(o); }
    if (features.filter_default) f.value = features.filter_default;
    $("filter-label").hidden = false;
  }
  $("style-label").hidden = !features.style;
  const sizes = m.sizes && m.sizes.length ? m.sizes : [imageSize], sz = $("size"); sz.innerHTML = "";
  for (const k of sizes) { const o = document.createElement("option"); o.value = k; o.textContent = `${k}×${k}`; sz.appendChild(o); }
  sz.value = imageSize;
  $("size-label").hidden = sizes.length < 2;  // a model with an upscaler draws larger
  MODES.build(m);  // the editor's modes and their inputs, from the model's declared modes (modes.js)
}

async function loadModel() {
  try {
    const data = await api("/api/models");
    models = data.models;
    const pick = $("model"); pick.innerHTML = "";
    for (const m of models) {
      const o = document.createElement("option"); o.value = m.name;
      o.textContent = m.name + (m.defaults && m.defaults.steps ? ` (${m.defaults.steps} step${m.defaults.steps === 1 ? "" : "s"})` : "");
      pick.appendChild(o);
    }
    $("model-label").hidden = models.length < 2;
    applyModel(models[0]);
    showError("");
  } catch (e) {
    $("model-info").textContent = "model info unavailable";
    showError(e.message);
  }
}

function readForm() {
  const p = {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    model: $("model").value || null,
    seed: $("random_seed").checked ? null : Number($("seed").value),
    sampler: $("sampler").value || null,
    steps: Number($("steps").value),
    guidance: Number($("guidance").value),
    num_images: Number($("num_images").value),
  };
  // sent only when changed: the model's own default applies otherwise
  if (!$("guidance_max_noise").disabled && Number($("guidance_max_noise").value) !== maxNoiseDefault) p.guidance_max_noise = Number($("guidance_max_noise").value);
  if (!$("cads").disabled && Number($("cads").value) !== cadsDefault) p.cads = Number($("cads").value);
  if (features.num_candidates) p.num_candidates = Number($("num_candidates").value);
  if (!$("size-label").hidden && Number($("size").value) !== imageSize) p.size = Number($("size").value);
  Object.assign(p, feedbackForm(p), adaptersForm(), sketchForm(), imagePromptForm());
  if (p.image_prompt && !p.prompt.trim()) delete p.prompt;  // the picture alone: no text at all
  if (features.filter && $("filter").value) p.filter = $("filter").value;
  if (features.style && $("style").value.trim()) p.style = $("style").value.trim();
  if (features.layout && layout.boxes.length) {
    p.layout = { width: imageSize, height: imageSize, objects: layout.boxes.map((b) => ({ caption: b.caption, box: b.box })) };
  }
  return p;
}

function fillForm(p) {
  layout.boxes = p.layout ? p.layout.objects.map((o) => ({ caption: o.caption, box: o.box.slice() })) : [];
  if (typeof drawLayout === "function" && $("layout-canvas")) drawLayout();
  $("prompt").value = p.prompt || "";
  $("negative_prompt").value = p.negative_prompt || "";
  $("random_seed").checked = p.seed === null || p.seed === undefined;
  if (!$("random_seed").checked) $("seed").value = p.seed;
  $("seed").disabled = $("random_seed").checked;
  $("guidance_max_noise").value = p.guidance_max_noise !== undefined ? p.guidance_max_noise : maxNoiseDefault;
  $("cads").value = p.cads !== undefined ? p.cads : cadsDefault;
  for (const k of ["sampler", "steps", "guidance", "num_images", "num_candidates", "keep_top", "filter", "style"]) if (p[k] !== undefined && p[k] !== null) $(k).value = p[k];
  $("size").value = p.size || imageSize;
}

function card(img, index) {
  const div = document.createElement("div"); div.className = "card";
  const el = document.createElement("img");
  const src = "data:image/png;base64," + img.png_base64;
  el.src = src; el.alt = img.parameters.prompt || "generated image";
  div.appendChild(el);
  const p = img.parameters, dl = document.createElement("dl");
  const rows = [["seed", p.seed], ["sampler", p.sampler], ["steps", p.steps], ["guidance", p.cfg_scale], ["size", `${p.width}×${p.height}`]];
  if (p.negative_prompt) rows.splice(0, 0, ["negative", p.negative_prompt]);
  if (img.rewritten_prompt && img.rewritten_prompt !== p.prompt) rows.splice(0, 0, ["rewritten", img.rewritten_prompt]);
  if (p.mode) rows.splice(0, 0, ["mode", p.mode + (p.weight !== undefined ? ` ${p.weight}` : "")]);
  if (p.layout) rows.push(["layout", p.layout.objects.map((o) => `${o.caption} [${o.box.join(",")}]`).join("; ")]);
  if (p.guidance_max_noise !== undefined && p.guidance_max_noise < 1) rows.push(["guidance below noise", p.guidance_max_noise]);
  if (p.cads !== undefined && p.cads > 0) rows.push(["CADS", p.cads]);
  if (p.strength !== undefined) rows.push(["strength", p.strength]);
  if (p.filter) rows.push(["filter", p.filter]);
  if (img.score !== null && img.score !== undefined) rows.push(["score", img.score.toFixed(3)]);
  if (p.num_candidates) rows.push(["candidates", p.num_candidates]);
  if (p.upscale_steps) rows.push(["upscaler", `${p.upscale_steps} steps ${p.upscale_sampler || "euler"}${p.upscale_consistent ? ", back-projected" : ""}, noise ${p.upscale_noise}`]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  div.appendChild(dl);
  if (img.filter_explanation && img.filter_explanation.length) div.title = "filter: " + img.filter_explanation.join("; ");
  const a = document.createElement("a");
  a.className = "download"; a.href = src; a.textContent = "Download";
  const stem = (p.prompt || "image").replace(/[^A-Za-z0-9]+/g, "_").slice(0, 40);
  a.download = `${stem}_${p.seed}_${index}.png`;
  div.appendChild(a);
  const e = document.createElement("button");
  e.type = "button"; e.className = "small edit"; e.textContent = "Edit";
  e.addEventListener("click", () => loadEditImage(src));
  div.appendChild(e);
  return div;
}

function history() { try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY)) || []; } catch (e) { return []; } }

function renderHistory() {
  const ol = $("history"); ol.innerHTML = "";
  for (const h of history().slice().reverse()) {
    const li = document.createElement("li");
    li.textContent = `${h.time} · "${h.params.prompt || "(image prompt)"}" · seed ${h.seed} · ${h.params.sampler} · ${h.params.steps} steps · ${h.count} image(s)`;
    const b = document.createElement("button"); b.type = "button"; b.className = "small rerun"; b.textContent = "re-run";
    b.addEventListener("click", () => { fillForm({ ...h.params, seed: h.seed }); generate(); });
    li.appendChild(b); ol.appendChild(li);
  }
}

async function pollProgress(id, stop) {
  while (!stop.done) {
    await new Promise((r) => setTimeout(r, 250));
    if (stop.done) break;
    try {
      const p = await api("/api/progress/" + id);
      const bar = $("progress-bar");
      if (p.state === "running" && p.total) { bar.max = p.total; bar.value = p.step; $("progress-text").textContent = `step ${p.step} / ${p.total}`; }
      else if (p.state === "queued") { bar.removeAttribute("value"); $("progress-text").textContent = "queued…"; }
    } catch (e) { /* progress is best-effort */ }
  }
}

async function generate() {
  showError("");
  const params = readForm();
  if (!(params.prompt || "").trim() && !params.image_prompt) { showError("Enter a prompt (or choose an image prompt) first."); return; }
  const clientId = "p" + Math.random().toString(36).slice(2) + Date.now().toString(36);
  $("generate").disabled = true; $("progress").hidden = false;
  $("progress-bar").removeAttribute("value"); $("progress-text").textContent = "starting…";
  const stop = { done: false }; pollProgress(clientId, stop);
  try {
    const [route, body] = storyRequest(params, clientId);
    const data = await api(route, body);
    const grid = $("results"); grid.innerHTML = "";
    data.images.forEach((img, i) => grid.appendChild(card(img, i)));
    showFeedback(data);
    const h = history();
    h.push({ params, seed: data.parameters.seed, count: data.images.length, time: new Date().toLocaleTimeString() });
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(h.slice(-50)));
    renderHistory();
    $("progress-text").textContent = `done in ${data.elapsed_s.toFixed(1)} s`;
  } catch (e) {
    showError(e.message);
  } finally {
    stop.done = true; $("generate").disabled = false;
    setTimeout(() => { $("progress").hidden = true; }, 800);
  }
}

// -- the editor ---------------------------------------------------------------------------------------
const MAX_EDIT_SIDE = 512;
const editor = { painting: false, hasImage: false };

function loadEditImage(src) {
  const img = new Image();
  img.onload = () => {
    const scale = Math.min(1, MAX_EDIT_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    const w = Math.max(1, Math.round(img.naturalWidth * scale)), h = Math.max(1, Math.round(img.naturalHeight * scale));
    for (const id of ["edit-image", "edit-mask"]) { $(id).width = w; $(id).height = h; }
    const ctx = $("edit-image").getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    ctx.drawImage(img, 0, 0, w, h);
    clearMask();
    editor.hasImage = true;
    $("editor").hidden = false;
    showError("");
  };
  img.onerror = () => showError("That file is not an image the browser can read (PNG, JPEG or WebP).");
  img.src = src;
}

function loadEditFile(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg|webp)$/.test(file.type)) { showError("Choose a PNG, JPEG or WebP image."); return; }
  const reader = new FileReader();
  reader.onload = () => loadEditImage(reader.result);
  reader.readAsDataURL(file);
}

function clearMask() { const c = $("edit-mask"); c.getContext("2d").clearRect(0, 0, c.width, c.height); }

function paintAt(ev) {
  const c = $("edit-mask"), r = c.getBoundingClientRect();
  const x = (ev.clientX - r.left) * c.width / r.width, y = (ev.clientY - r.top) * c.height / r.height;
  const radius = Number($("brush").value) * c.width / 64 / 2;
  const ctx = c.getContext("2d");
  ctx.globalCompositeOperation = $("erase").checked ? "destination-out" : "source-over";
  ctx.fillStyle = "#e11d48";
  ctx.beginPath(); ctx.arc(x, y, Math.max(0.5, radius), 0, 2 * Math.PI); ctx.fill();
}

function maskDataURL() {
  // The painted pixels become white (repaint), the rest black (keep), at the image's size.
  const src = $("edit-mask"), out = document.createElement("canvas");
  out.width = src.width; out.height = src.height;
  const data = src.getContext("2d").getImageData(0, 0, src.width, src.height), px = data.data;
  let painted = 0;
  for (let i = 0; i < px.length; i += 4) {
    const on = px[i + 3] > 0; painted += on;
    px[i] = px[i + 1] = px[i + 2] = on ? 255 : 0; px[i + 3] = 255;
  }
  out.getContext("2d").putImageData(data, 0, 0);
  return painted ? out.toDataURL("image/png") : null;
}

async function runEdit() {
  showError("");
  if (!editor.hasImage) { showError("Choose an image to edit first."); return; }
  const f = readForm(), mode = $("edit-mode").value;
  let [body, problem] = MODES.body(mode, f, $("edit-image").toDataURL("image/png"), maskDataURL());
  if (problem) { showError(problem); return; }
  const route = mode === "fuse" ? "/api/fuse" : "/api/edit";
  if (mode === "fuse") body = fuseRequest(body, f.prompt, $("edit-image").toDataURL("image/png"));
  body.model = f.model;
  if (f.adapters) body.adapters = f.adapters;
  const clientId = "e" + Math.random().toString(36).slice(2) + Date.now().toString(36);
  body.client_id = clientId;
  $("edit-run").disabled = true; $("generate").disabled = true; $("progress").hidden = false;
  $("progress-bar").removeAttribute("value"); $("progress-text").textContent = "starting…";
  const stop = { done: false }; pollProgress(clientId, stop);
  try {
    const data = await api(route, body);
    const grid = $("results"); grid.innerHTML = "";
    data.images.forEach((img, i) => grid.appendChild(card(img, i)));
    $("progress-text").textContent = `done in ${data.elapsed_s.toFixed(1)} s`;
  } catch (e) {
    showError(e.message);
  } finally {
    stop.done = true;
    $("edit-run").disabled = false; $("generate").disabled = false;
    setTimeout(() => { $("progress").hidden = true; }, 800);
  }
}

// -- scene layout: boxes drawn on a canvas, each with its caption -----------------------------------------
function layoutPoint(ev) {
  const c = $("layout-canvas"), r = c.getBoundingClientRect();
  const clamp = (v) => Math.min(Math.max(v, 0), 1);
  return [clamp((ev.clientX - r.left) / r.width), clamp((ev.clientY - r.top) / r.height)];
}

function drawLayout() {
  const c = $("layout-canvas"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const k = c.width / imageSize;
  ctx.font = "12px system-ui, sans-serif";
  for (const b of layout.boxes) {
    const [x0, y0, x1, y1] = b.box;
    ctx.strokeStyle = "#1d4ed8"; ctx.lineWidth = 2; ctx.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
    ctx.fillStyle = "#1d4ed8"; ctx.fillText(b.caption, x0 * k + 3, y0 * k + 13);
  }
  if (layout.drag) {
    const [a, b] = layout.drag;
    ctx.strokeStyle = "#c2410c"; ctx.setLineDash([4, 3]);
    ctx.strokeRect(Math.min(a[0], b[0]) * c.width, Math.min(a[1], b[1]) * c.height, Math.abs(a[0] - b[0]) * c.width, Math.abs(a[1] - b[1]) * c.height);
    ctx.setLineDash([]);
  }
  const ol = $("layout-boxes"); ol.innerHTML = "";
  layout.boxes.forEach((b, i) => {
    const li = document.createElement("li");
    li.textContent = `${b.caption}: [${b.box.join(", ")}] `;
    const rm = document.createElement("button"); rm.type = "button"; rm.className = "small"; rm.textContent = "remove";
    rm.addEventListener("click", () => { layout.boxes.splice(i, 1); drawLayout(); });
    li.appendChild(rm); ol.appendChild(li);
  });
}

function setUpLayout() {
  const c = $("layout-canvas");
  c.addEventListener("pointerdown", (ev) => {
    if (!$("box-caption").value.trim()) { showError("Type the caption of the box first."); return; }
    c.setPointerCapture(ev.pointerId); const p = layoutPoint(ev); layout.drag = [p, p]; drawLayout();
  });
  c.addEventListener("pointermove", (ev) => { if (layout.drag) { layout.drag[1] = layoutPoint(ev); drawLayout(); } });
  c.addEventListener("pointerup", () => {
    if (!layout.drag) return;
    const [a, b] = layout.drag; layout.drag = null;
    const px = (v) => Math.round(v * imageSize);
    const box = [px(Math.min(a[0], b[0])), px(Math.min(a[1], b[1])), px(Math.max(a[0], b[0])), px(Math.max(a[1], b[1]))];
    if (box[2] - box[0] >= 4 && box[3] - box[1] >= 4 && layout.boxes.length < 6) {
      layout.boxes.push({ caption: $("box-caption").value.trim(), box });
      showError("");
    }
    drawLayout();
  });
  $("clear-boxes").addEventListener("click", () => { layout.boxes = []; drawLayout(); });
  drawLayout();
}

function setUpEditor() {
  $("edit-file").addEventListener("change", () => loadEditFile($("edit-file").files[0]));
  const panel = $("edit-panel");
  panel.addEventListener("dragover", (ev) => { ev.preventDefault(); panel.classList.add("dragover"); });
  panel.addEventListener("dragleave", () => panel.classList.remove("dragover"));
  panel.addEventListener("drop", (ev) => { ev.preventDefault(); panel.classList.remove("dragover"); loadEditFile(ev.dataTransfer.files[0]); });
  const mask = $("edit-mask");
  mask.addEventListener("pointerdown", (ev) => { editor.painting = true; mask.setPointerCapture(ev.pointerId); paintAt(ev); });
  mask.addEventListener("pointermove", (ev) => { if (editor.painting) paintAt(ev); });
  for (const type of ["pointerup", "pointercancel"]) mask.addEventListener(type, () => { editor.painting = false; });
  $("clear-mask").addEventListener("click", clearMask);
  $("edit-mode").addEventListener("change", () => MODES.render());
  $("edit-run").addEventListener("click", runEdit);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpEditor();
  setUpLayout();
  $("token").value = sessionStorage.getItem("minicream.token") || "";
  $("model").addEventListener("change", () => { const m = models.find((x) => x.name === $("model").value); if (m) applyModel(m); });
  $("token").addEventListener("change", () => { sessionStorage.setItem("minicream.token", $("token").value.trim()); loadModel(); });
  $("random_seed").addEventListener("change", () => { $("seed").disabled = $("random_seed").checked; });
  $("seed").disabled = $("random_seed").checked;
  $("form").addEventListener("submit", (ev) => { ev.preventDefault(); generate(); });
  $("clear-history").addEventListener("click", () => { sessionStorage.removeItem(HISTORY_KEY); renderHistory(); });
  renderHistory();
  loadModel();
});
