// Images as prompts on the page (issue 34). The "Image prompt" panel (shown when the chosen model has an image-prompt
// adapter: GET /api/models "image_prompt") sends a chosen picture with /api/generate as `image_prompt` (a PNG data
// URL) and `image_scale`; with it the prompt may stay empty. "Through the prior" sends `prior: true` (text -> image
// embedding -> the adapter). In the editor, the mode "fuse" mixes the edited image with the prompt's text in the
// image-embedding space (POST /api/fuse), the image's weight from a slider. Hooks in app.js: imagePromptModel(m) in
// applyModel(), imagePromptForm() in readForm(), fuseRequest(...) in runEdit(); modes.js offers fuse in the editor.
"use strict";

const imagePrompt = { url: null };

function imagePromptSetup() {
  $("image-prompt-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      const img = new Image();
      img.onload = () => {  // squared on white at 256 px: what the server reads anyway, and a small upload
        const c = $("image-prompt-preview"), ctx = c.getContext("2d"), s = Math.min(img.width, img.height);
        ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height);
        ctx.drawImage(img, (img.width - s) / 2, (img.height - s) / 2, s, s, 0, 0, c.width, c.height);
        imagePrompt.url = c.toDataURL("image/png");
        $("image-prompt-state").textContent = "the picture steers: the prompt is optional";
      };
      img.onerror = () => showError("That file is not an image the browser can read.");
      img.src = reader.result;
    };
    reader.readAsDataURL(file);
  });
  $("image-prompt-clear").addEventListener("click", imagePromptClear);
  imagePromptClear();
}

function imagePromptClear() {
  const c = $("image-prompt-preview");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
  imagePrompt.url = null; $("image-prompt-file").value = "";
  $("image-prompt-state").textContent = "none: the prompt alone draws";
}

function imagePromptModel(m) {
  const has = !!(m && m.image_prompt);
  $("image-prompt-panel").hidden = !has;
  $("prior-label").hidden = !(m && m.prior);
  if (!has) imagePromptClear();
}

function imagePromptForm() {  // the image-prompt fields of /api/generate
  const out = {};
  if (!$("image-prompt-panel").hidden && imagePrompt.url) {
    out.image_prompt = imagePrompt.url; out.image_scale = Number($("image-prompt-scale").value);
  } else if (!$("prior-label").hidden && $("prior").checked) {
    out.prior = true;
  }
  return out;
}

function fuseRequest(body, prompt, imageURL) {  // the editor's fuse: the image and the prompt's text, mixed
  const w = Number($("opt-image-weight") ? $("opt-image-weight").value : 0.5);
  const parts = [{ image: imageURL }], weights = [w];
  if (prompt && prompt.trim()) { parts.push({ text: prompt.trim() }); weights.push(1 - w); }
  const out = { ...body, parts, weights };
  delete out.mode; delete out.prompt;
  return out;
}

document.addEventListener("DOMContentLoaded", imagePromptSetup);
