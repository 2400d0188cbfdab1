"""The reading page: one HTML document with its CSS and JavaScript inline (no CDN, font or external file).

Kept as a Python string so it ships inside the package without package-data rules.
Flow: the reader gives a new name (the server returns a secret token, kept in localStorage so a
reload resumes, and shown as a personal link `/#reader=TOKEN` that resumes in any browser; the
fragment never reaches the server's logs), then sees one image at a time. R / S answers; 1-5 sets an optional confidence first;
N focuses the note; B or Left goes back one image. The next image is requested only after the
server confirmed the answer was saved.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sonosynth reader study</title>
<style>
  :root { color-scheme: dark; }
  * { box-sizing: border-box; }
  body { margin: 0; background: #111; color: #ddd; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  header { display: flex; justify-content: space-between; align-items: center; padding: .5rem 1rem; background: #1b1b1b;
           border-bottom: 1px solid #333; }
  header h1 { font-size: 1rem; margin: 0; font-weight: 600; }
  main { display: flex; flex-direction: column; align-items: center; padding: 1rem; gap: .8rem; }
  .hidden { display: none !important; }
  #reading, #done { display: flex; flex-direction: column; align-items: center; gap: .8rem; }
  #frame { width: min(66vh, 92vw); height: min(66vh, 92vw); background: #000; display: flex; align-items: center;
           justify-content: center; border: 1px solid #333; }
  #image { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
  .row { display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; justify-content: center; }
  button { font: inherit; padding: .5rem 1.1rem; border-radius: 6px; border: 1px solid #555; background: #2a2a2a;
           color: #eee; cursor: pointer; }
  button:hover:not(:disabled) { background: #383838; }
  button:disabled { opacity: .4; cursor: default; }
  button.answer { min-width: 9rem; font-weight: 600; }
  button.chosen, .conf button.chosen { background: #2f5f9e; border-color: #6fa0e0; }
  kbd { font: 12px ui-monospace, monospace; border: 1px solid #666; border-radius: 3px; padding: 0 .3rem; }
  .conf button { min-width: 2.4rem; padding: .35rem .5rem; }
  textarea { width: min(66vh, 92vw); height: 3.2rem; background: #1b1b1b; color: #eee; border: 1px solid #444;
             border-radius: 6px; padding: .4rem; font: inherit; }
  input[type=text] { font: inherit; padding: .45rem; width: 18rem; background: #1b1b1b; color: #eee;
                     border: 1px solid #555; border-radius: 6px; }
  #progress { font-variant-numeric: tabular-nums; }
  #bar { width: min(66vh, 92vw); height: 4px; background: #333; }
  #bar div { height: 100%; background: #6fa0e0; width: 0; }
  #status { min-height: 1.3rem; color: #9c9; font-size: .9rem; }
  #status.error { color: #f88; }
  .help { color: #999; font-size: .85rem; }
  #revisit { color: #fc6; font-size: .9rem; }
</style>
</head>
<body>
<header>
  <h1>Reader study: real or synthetic?</h1>
  <div><span id="reader-name"></span> <span id="progress"></span>
       <button id="switch" class="hidden" type="button" title="another reader">switch reader</button></div>
</header>
<main>
  <form id="start" class="hidden">
    <p>Each image is either a real ultrasound frame or a synthetic one. Label every image; you can stop at any
       time and resume later in this browser, or anywhere with the personal link shown once you start.</p>
    <div class="row"><label for="name">Your name</label>
      <input id="name" type="text" maxlength="80" autocomplete="off" required>
      <button id="begin" type="submit">Start</button></div>
  </form>

  <section id="reading" class="hidden">
    <div class="row"><div id="bar"><div></div></div></div>
    <div id="frame"><img id="image" alt="study image"></div>
    <div id="revisit" class="hidden">You are looking at your previous image again; answer it to continue.</div>
    <div class="row">
      <button id="back" type="button" title="back one image (B)">&#8592; back <kbd>B</kbd></button>
      <button id="real" class="answer" type="button">Real <kbd>R</kbd></button>
      <button id="synthetic" class="answer" type="button">Synthetic <kbd>S</kbd></button>
    </div>
    <div class="row conf" id="confidence">
      <span>Confidence (optional):</span>
      <button type="button" data-value="1">1</button><button type="button" data-value="2">2</button>
      <button type="button" data-value="3">3</button><button type="button" data-value="4">4</button>
      <button type="button" data-value="5">5</button>
      <span class="help">1 guessing &middot; 5 certain</span>
    </div>
    <textarea id="note" maxlength="2000" placeholder="Optional note (N to type here, Esc to leave)"></textarea>
    <div class="help">Set a confidence with <kbd>1</kbd>&ndash;<kbd>5</kbd>, then answer with <kbd>R</kbd> or
      <kbd>S</kbd>. Every answer is saved before the next image appears; close the page whenever you like.</div>
  </section>

  <section id="done" class="hidden">
    <p>All images are answered. Thank you! You can go back one image to change your last answer.</p>
    <div class="row"><button id="back-done" type="button">&#8592; back <kbd>B</kbd></button></div>
  </section>
  <div id="status" role="status"></div>
  <p id="link-box" class="help hidden">Your personal link resumes your reading in any browser; keep it to
     yourself: <a id="reader-link" href="#"></a></p>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "sonosynth-reader-study-token";
let reader = null;        // {reader, name, total, answered, done}
let item = null;          // the image on screen: {position, image_id, answer, confidence, note}
let confidence = null;
let busy = false;
let shownAt = 0;

function status(text, error) { $("status").textContent = text || ""; $("status").className = error ? "error" : ""; }

async function api(method, url, body) {
  const options = {method, headers: {}};
  if (body !== undefined) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
  const response = await fetch(url, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) { const error = new Error(data.detail || response.statusText); error.status = response.status; throw error; }
  return data;
}

function show(section) {
  for (const id of ["start", "reading", "done"]) $(id).classList.toggle("hidden", id !== section);
  $("switch").classList.toggle("hidden", section === "start");
}

function setConfidence(value) {
  confidence = value;
  for (const b of document.querySelectorAll("#confidence button")) b.classList.toggle("chosen", Number(b.dataset.value) === value);
}

function updateProgress() {
  const shown = item ? item.position + 1 : reader.answered;
  $("reader-name").textContent = reader.name + " \u00b7";
  $("progress").textContent = reader.done && !item ? `${reader.total} of ${reader.total} done`
                                                    : `Image ${shown} of ${reader.total}`;
  $("bar").firstElementChild.style.width = `${100 * reader.answered / reader.total}%`;
  const canGoBack = reader.answered > 0 && (!item || item.position === reader.answered);
  $("back").disabled = !canGoBack;
  $("back-done").disabled = !canGoBack;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = $("image");
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("the image could not be loaded"));
    img.src = src;
  });
}

async function showPosition(position) {
  if (position >= reader.total) { item = null; show("done"); updateProgress(); return; }
  const next = await api("GET", `/api/readers/${reader.reader}/items/${position}`);
  await loadImage(`/images/${next.image_id}`);
  item = next;
  setConfidence(item.confidence);
  $("note").value = item.note || "";
  $("real").classList.toggle("chosen", item.answer === "real");
  $("synthetic").classList.toggle("chosen", item.answer === "synthetic");
  $("revisit").classList.toggle("hidden", item.answer === null);
  show("reading");
  updateProgress();
  shownAt = performance.now();
}

function personalLink(token) { return `${location.origin}/#reader=${token}`; }

async function resume(token) {
  reader = await api("GET", `/api/readers/${token}`);
  $("name").blur();  // so the shortcut keys reach the page, not the hidden name field
  localStorage.setItem(TOKEN_KEY, reader.reader);
  $("reader-link").textContent = $("reader-link").href = personalLink(reader.reader);
  $("link-box").classList.remove("hidden");
  await showPosition(reader.answered);
  status(reader.answered ? `Welcome back, ${reader.name}: resuming at image ${Math.min(reader.answered + 1, reader.total)}.` : "");
}

async function answer(label) {
  if (busy || !item) return;
  busy = true;
  status("saving\u2026");
  try {
    const body = {answer: label, confidence, note: $("note").value.trim() || null,
                  seconds: Math.min(86400, Math.round((performance.now() - shownAt) / 100) / 10)};
    reader = await api("PUT", `/api/readers/${reader.reader}/answers/${item.image_id}`, body);
    status("saved");
    await showPosition(reader.answered);
  } catch (error) {
    status(`Not saved: ${error.message}. Try again.`, true);
  } finally { busy = false; }
}

async function back() {
  if (busy || !reader || reader.answered === 0 || (item && item.position !== reader.answered)) return;
  busy = true;
  try { await showPosition(reader.answered - 1); status(""); }
  catch (error) { status(error.message, true); }
  finally { busy = false; }
}

$("start").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const created = await api("POST", "/api/readers", {name: $("name").value});
    await resume(created.reader);
  } catch (error) { status(error.message, true); }
});
$("real").addEventListener("click", () => answer("real"));
$("synthetic").addEventListener("click", () => answer("synthetic"));
$("back").addEventListener("click", back);
$("back-done").addEventListener("click", back);
$("switch").addEventListener("click", () => {
  if (!confirm(`Your answers stay saved. To come back to them later you need your personal link:\n${personalLink(reader.reader)}`)) return;
  localStorage.removeItem(TOKEN_KEY); location.reload();
});
for (const b of document.querySelectorAll("#confidence button")) {
  b.addEventListener("click", () => setConfidence(confidence === Number(b.dataset.value) ? null : Number(b.dataset.value)));
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.tagName === "TEXTAREA" || event.target.tagName === "INPUT";
  if (typing) { if (event.key === "Escape") event.target.blur(); return; }
  if ($("start").classList.contains("hidden") === false) return;
  const key = event.key.toLowerCase();
  if (key === "r") answer("real");
  else if (key === "s") answer("synthetic");
  else if (key === "b" || key === "arrowleft") back();
  else if (key === "n") { $("note").focus(); }
  else if (/^[1-5]$/.test(key)) setConfidence(Number(key));
  else return;
  event.preventDefault();
});

// A personal link opened in a tab already on this page changes only the fragment: start over with it.
window.addEventListener("hashchange", () => { if (location.hash.startsWith("#reader=")) location.reload(); });

(async () => {
  // A personal link carries the token in the fragment; keep it, then clear it from the address bar.
  const linked = /^#reader=([0-9a-f]{32})$/.exec(location.hash);
  if (linked) { localStorage.setItem(TOKEN_KEY, linked[1]); history.replaceState(null, "", location.pathname); }
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) {
    try { await resume(token); return; }
    catch (error) { localStorage.removeItem(TOKEN_KEY); }
  }
  show("start");
  $("name").focus();
})();
</script>
</body>
</html>
"""
