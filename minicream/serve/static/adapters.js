// Adapters on the page (issue 31): the chosen model's loaded adapters (GET /api/models; `minicream serve --adapter
// DIR[:SCALE]`) as a picker, each ticked or not with its scale. When the model has any, generate and edit requests
// send `adapters`: exactly the ticked ones (none ticked: none). A textual inversion is a word, always scale 1.
// Hooks in app.js: adaptersModel(m) in applyModel(), adaptersForm() in readForm() and runEdit().
"use strict";

function adaptersModel(m) {
  const list = (m && m.adapters) || [], box = $("adapter-list");
  box.innerHTML = "";
  $("adapters-panel").hidden = !list.length;
  for (const a of list) {
    const row = document.createElement("label"), on = document.createElement("input"), scale = document.createElement("input");
    row.className = "adapter check";
    on.type = "checkbox"; on.value = a.name; on.checked = a.scale > 0; on.dataset.textual = a.method === "textual-inversion" ? "1" : "";
    scale.type = "number"; scale.min = "0"; scale.max = "2"; scale.step = "0.05"; scale.value = a.scale > 0 ? a.scale : 1;
    scale.disabled = a.method === "textual-inversion";
    scale.setAttribute("aria-label", `scale of ${a.name}`);
    const token = document.createElement("code");
    token.textContent = a.token; token.title = "write this in the prompt";
    row.title = `${a.method}${a.style ? " (a style)" : ""}, hash ${a.hash}`;
    row.append(on, ` ${a.name} `, token, " scale ", scale);
    box.appendChild(row);
  }
}

function adaptersForm() {  // the `adapters` field of /api/generate and /api/edit
  if ($("adapters-panel").hidden) return {};
  const chosen = [];
  for (const row of $("adapter-list").querySelectorAll("label.adapter")) {
    const [on, scale] = row.querySelectorAll("input");
    if (on.checked) chosen.push({ name: on.value, scale: on.dataset.textual ? 1 : Number(scale.value) });
  }
  return { adapters: chosen };
}
