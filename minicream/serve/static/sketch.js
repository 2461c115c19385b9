// The sketch pad (issue 33): draw with the mouse (or a pen or a finger) and generate from the drawing through the
// model's ControlNet. Shown when the chosen model has one (GET /api/models "controls": its kinds); a drawing with
// at least one stroke is sent with /api/generate as `control` (a PNG data URL), with `control_kind`,
// `control_scale` and `control_end`. Hooks in app.js: sketchModel(m) in applyModel(), sketchForm() in readForm().
"use strict";

const sketch = { strokes: 0, drawing: false, last: null };

function sketchClear() {
  const c = $("sketch-canvas"), ctx = c.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
  sketch.strokes = 0;
  $("sketch-state").textContent = "empty: the prompt alone draws";
}

function sketchPoint(e) {
  const c = $("sketch-canvas"), r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height];
}

function sketchLine(a, b) {
  const ctx = $("sketch-canvas").getContext("2d");
  ctx.strokeStyle = "#000"; ctx.lineWidth = Number($("sketch-brush").value); ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
}

function sketchSetup() {
  const c = $("sketch-canvas");
  c.addEventListener("pointerdown", (e) => {
    sketch.drawing = true; sketch.last = sketchPoint(e);
    sketchLine(sketch.last, sketch.last);
    c.setPointerCapture(e.pointerId);
  });
  c.addEventListener("pointermove", (e) => {
    if (!sketch.drawing) return;
    const p = sketchPoint(e);
    sketchLine(sketch.last, p); sketch.last = p;
  });
  const end = () => {
    if (!sketch.drawing) return;
    sketch.drawing = false; sketch.strokes += 1;
    $("sketch-state").textContent = `${sketch.strokes} stroke${sketch.strokes > 1 ? "s" : ""}: the picture follows the drawing`;
  };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointerleave", end);
  $("sketch-clear").addEventListener("click", sketchClear);
  sketchClear();
}

function sketchModel(m) {
  const kinds = (m && m.controls) || [], select = $("sketch-kind");
  $("sketch-panel").hidden = !kinds.length;
  select.innerHTML = "";
  for (const k of kinds) {
    const o = document.createElement("option");
    o.value = k; o.textContent = k === "scribble" ? "scribble (a rough drawing)" : "edges (clean outlines)";
    select.appendChild(o);
  }
  if (kinds.includes("scribble")) select.value = "scribble";  // a mouse drawing is a scribble
}

function sketchForm() {  // the control fields of /api/generate
  if ($("sketch-panel").hidden || !sketch.strokes) return {};
  return { control: $("sketch-canvas").toDataURL("image/png"), control_kind: $("sketch-kind").value,
           control_scale: Number($("sketch-scale").value), control_end: Number($("sketch-end").value) };
}

document.addEventListener("DOMContentLoaded", sketchSetup);
