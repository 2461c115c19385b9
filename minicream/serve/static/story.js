// A story on the page (issue 33): with "Story" ticked, each line of the prompt is a scene and the request goes to
// POST /api/modes/story, so an object that recurs in several scenes is drawn once and kept the same in each. Shown
// when the chosen model declares the story mode (GET /api/models). Hooks in app.js: storyModel(m) in applyModel(),
// storyRequest(params, clientId) in generate().
"use strict";

function storyModel(m) {
  const has = !!(m && m.modes && m.modes.story);
  $("story-label").hidden = !has;
  if (!has) $("story").checked = false;
}

function storyRequest(params, clientId) {  // [route, body]: a story, or the plain /api/generate request
  if ($("story-label").hidden || !$("story").checked) return ["/api/generate", { ...params, client_id: clientId }];
  const body = { scenes: params.prompt, client_id: clientId };
  for (const k of ["model", "negative_prompt", "seed", "sampler", "steps", "guidance", "num_images", "style", "adapters",
                   "guidance_max_noise", "cads"]) {
    if (params[k] !== undefined && params[k] !== null && params[k] !== "") body[k] = params[k];
  }
  return ["/api/modes/story", body];
}
