// People's ratings on the page (issue 35): after a generation of several images (the best K of N candidates with
// "Show", or several images of one prompt) the server recorded them as one candidate set (the answer's `feedback`:
// its id and each image's sha256); each card gets "best" and "wrong" buttons that POST /api/feedback, and the
// evaluator is later fine-tuned on those choices (`minicream train-evaluator --feedback`).
// Hooks in app.js: feedbackModel() in applyModel(), feedbackForm() in readForm(), showFeedback() in generate().
"use strict";

function feedbackModel(f) {  // "Show" (keep_top) only where the pipeline returns several best candidates
  $("keep_top").disabled = !f.keep_top;
  $("keep_top").title = f.keep_top ? "with best-of-N: show the best K of the N candidates, best first, to pick the best among them"
    : "this server's pipeline has no best-of-N";
}

function feedbackForm(p) {  // the extra fields of /api/generate; keep_top is sent only when it asks for more than one
  const k = Number($("keep_top").value);
  return !$("keep_top").disabled && p.num_candidates > 1 && k > 1 ? { keep_top: k } : {};
}

async function postFeedback(body) {
  const res = await fetch("/api/feedback", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (res.ok) return data;
  let msg = (data && data.error && data.error.message) || res.statusText || ("HTTP " + res.status);
  if (res.status === 429) msg += ` (try again in ${res.headers.get("Retry-After") || "a few"} s)`;
  throw new Error(msg);
}

function rateButton(text, cls, title) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "small " + cls; b.textContent = text; b.title = title;
  return b;
}

function showFeedback(data) {
  const fb = data && data.feedback, grid = $("results");
  if (!fb) return;
  const bar = document.createElement("p");
  bar.id = "feedback-bar"; bar.className = "feedback-bar"; bar.setAttribute("role", "status");
  grid.prepend(bar);
  if (!fb.set_id) { bar.textContent = "Ratings are unavailable: " + (fb.error || "the server did not record these images"); return; }
  const cards = Array.from(grid.querySelectorAll(".card")), n = new Set(fb.images).size;
  bar.textContent = `Which is best? Pick one of these ${n} (or mark a wrong one): your choice teaches the evaluator.`;
  cards.forEach((c, i) => {
    const row = document.createElement("div"); row.className = "rate";
    const best = rateButton("best", "pick", "this one shows the prompt best");
    const wrong = rateButton("wrong", "wrong", "this one does not show the prompt");
    best.addEventListener("click", () => rate(fb, cards, i, "choose", bar));
    wrong.addEventListener("click", () => rate(fb, cards, i, "wrong", bar));
    row.append(best, wrong); c.appendChild(row);
  });
}

async function rate(fb, cards, i, action, bar) {
  bar.classList.remove("error");
  try {
    await postFeedback({ action, image: fb.images[i], set_id: fb.set_id });
    if (action === "choose") {
      cards.forEach((c, j) => c.classList.toggle("chosen", j === i));
      bar.textContent = `Recorded: image ${i + 1} is the best of ${new Set(fb.images).size}. Thank you.`;
    } else {
      cards[i].classList.add("marked-wrong");
      bar.textContent = `Recorded: image ${i + 1} does not show the prompt. Thank you.`;
    }
  } catch (e) {
    bar.textContent = "Not recorded: " + e.message; bar.classList.add("error");
  }
}
