// The editor's modes and their inputs, built from GET /api/models (each model's modes with their declared options:
// name, field, kind, default, help, choices, required, limits), never from a list written here. A mode whose
// required inputs include an image is offered in the editor; its options that the main form has no input for
// (strength, the sides to extend, frames, a new mode's own) get inputs of their kind; its first image is the one in
// the editor, any other (inpaint's mask) the painted mask.
"use strict";

const MODES = {
  byName: {},
  form: (field) => { const el = document.getElementById(field); return el && el.closest("#form") && !el.closest("#mode-options") ? el : null; },
  // a mode taking an image, or fusion (its parts: the editor's image and the prompt's text, imageprompt.js)
  isEditMode: (m) => m.options.some((o) => o.required && (o.kind === "image" || o.kind === "parts")),

  build(model) {
    this.byName = (model && model.modes) || {};
    const sel = document.getElementById("edit-mode"), previous = sel.value || sel.dataset.default;
    sel.innerHTML = "";
    for (const [name, m] of Object.entries(this.byName)) {
      if (!this.isEditMode(m)) continue;
      const o = document.createElement("option"); o.value = name; o.textContent = name; o.title = m.help;
      sel.appendChild(o);
    }
    if ([...sel.options].some((o) => o.value === previous)) sel.value = previous;
    this.render();
  },

  options(name) { return (this.byName[name] || { options: [] }).options; },

  images(name) { return this.options(name).filter((o) => o.kind === "image"); },

  render() {
    const name = document.getElementById("edit-mode").value, box = document.getElementById("mode-options");
    const m = this.byName[name];
    document.getElementById("mode-help").textContent = m ? m.help : "";
    box.innerHTML = "";
    for (const o of this.options(name)) {
      if (o.kind === "image" || o.kind === "floats" || this.form(o.field)) continue;  // the editor's images; the main form's inputs
      box.appendChild(o.kind === "parts" ? this.weight() : this.input(o));
    }
  },

  weight() {  // fusion: the edited image's weight against the prompt's text
    const label = document.createElement("label"); label.title = "the image's weight in the mix; the prompt's text has the rest";
    const el = document.createElement("input"); el.type = "number"; el.min = "0"; el.max = "1"; el.step = "0.05"; el.value = "0.5";
    el.id = "opt-image-weight"; label.append("image weight ", el);
    return label;
  },

  input(o) {
    const label = document.createElement("label"); label.title = o.help;
    label.append(o.field.replace(/_/g, " ") + " ");
    let el;
    if (o.kind === "bool" && (o.default === null || o.default === undefined)) {  // unset: the model's own
      el = document.createElement("select");
      for (const [text, v] of [["(default)", ""], ["yes", "true"], ["no", "false"]]) el.appendChild(new Option(text, v));
    } else if (o.choices.length && o.kind !== "json") {
      el = document.createElement("select");
      if (!o.required) el.appendChild(new Option("(default)", ""));
      for (const c of o.choices) el.appendChild(new Option(String(c), String(c)));
    } else if (o.kind === "int" || o.kind === "float" || o.kind === "seed") {
      el = document.createElement("input"); el.type = "number"; el.step = o.kind === "float" ? "0.05" : "1";
      const lo = o.limits.ge !== undefined ? o.limits.ge : o.limits.gt, hi = o.limits.le !== undefined ? o.limits.le : o.limits.lt;
      if (lo !== undefined) el.min = lo;
      if (hi !== undefined) el.max = hi;
    } else if (o.kind === "bool") {
      el = document.createElement("input"); el.type = "checkbox"; el.checked = !!o.default; label.className = "check";
    } else if (o.kind === "json") {
      el = document.createElement("textarea"); el.rows = 2; el.placeholder = "JSON";
    } else {
      el = document.createElement("input"); el.maxLength = o.limits.max_length || 1000;
    }
    if (o.default !== null && o.default !== undefined && o.kind !== "bool") el.value = String(o.default);
    el.id = "opt-" + o.field; el.dataset.field = o.field; el.dataset.kind = o.kind;
    label.appendChild(el);
    return label;
  },

  value(o, el) {
    if (o.kind === "bool") return el.tagName === "SELECT" ? (el.value === "" ? undefined : el.value === "true") : el.checked;
    if (el.value === "") return undefined;
    if (o.kind === "json") { try { return JSON.parse(el.value); } catch (e) { return el.value; } }
    if (["int", "float", "seed"].includes(o.kind) && !o.choices.length) return Number(el.value);
    return el.value;
  },

  // The request body of the chosen mode: (fields, or an error message for the user).
  body(name, formValues, imageURL, maskURL) {
    const body = { mode: name }, opts = this.options(name);
    const firstImage = opts.find((o) => o.kind === "image");
    for (const o of opts) {
      let v;
      if (o.kind === "parts" || o.kind === "floats") continue;  // fusion's parts and weights: imageprompt.js
      if (o.kind === "image") v = o === firstImage ? imageURL : maskURL;
      else if (this.form(o.field)) v = formValues[o.field];
      else v = this.value(o, document.getElementById("opt-" + o.field));
      if (typeof v === "string" && o.kind !== "image" && !v.trim()) v = undefined;
      if (typeof v === "number" && o.limits.le !== undefined) v = Math.min(v, o.limits.le);
      if (v === undefined || v === null) {
        if (!o.required) continue;
        if (o.kind === "image") return [null, "Paint the area to repaint on the image first."];
        return [null, `Enter the ${o.field.replace(/_/g, " ")}: ${o.help}.`];
      }
      body[o.field] = v;
    }
    return [body, null];
  },
};
