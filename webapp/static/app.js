// The page: uploads (one request per file, so that a refused file never stops the others), the
// jobs with their progress, the result of the selected job. Plain DOM, no library; every text
// from a file name or a record goes in as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;
let jobs = [];
let selected = null;
let shownKey = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const num = (x, d = 4) => (x === null || x === undefined || Number.isNaN(x)) ? "-" : Number(x).toFixed(d);

function duration(s) {
  if (s === null || s === undefined) return "";
  if (s < 10) return `${Math.max(0, s).toFixed(1)} s`;
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function alertBox(text) {
  const box = el("div", { class: "alert" }, el("span", {}, text),
    el("button", { type: "button", "aria-label": "dismiss", onclick: () => box.remove() }, "×"));
  $("alerts").append(box);
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.detail && (typeof body.detail === "string" ? body.detail :
    JSON.stringify(body.detail))) || `${r.status} ${r.statusText}`);
  return body;
}

// ---------------------------------------------------------------- the model and the settings
async function loadModel() {
  try {
    model = await api("/api/model");
  } catch (e) {
    $("model").textContent = `The model could not be read: ${e.message}`;
    return;
  }
  const spec = model.input_spec || {};
  const cal = model.calibration ? "calibrated probabilities" : "no calibration (raw probabilities)";
  const ckpt = model.checkpoint || "";  // as it was given to serve.py
  $("model").textContent = `Detector ${model.detector}, checkpoint ${ckpt}, input ${(spec.size || []).join(" x ")} px, ${cal}.`;
  $("frames").placeholder = String(model.defaults.frames);
  const det = $("face_detector");
  det.append(el("option", { value: "" }, `the ${model.face_crop || "box"} crop rule's`));
  for (const d of model.face_detectors) det.append(el("option", { value: d }, d));
  const minScore = () => { $("min_face_score").placeholder = String(model.defaults.min_face_score[det.value || "dlib"] ?? ""); };
  det.addEventListener("change", minScore);
  minScore();
  const op = $("op");
  op.append(el("option", { value: "" }, `the checkpoint's default (${num(model.threshold, 2)})`));
  const names = { "eer": "equal error rate", "fpr@0.01": "1 % false positives", "fpr@0.05": "5 % false positives", "fpr@0.1": "10 % false positives" };
  for (const p of model.operating_points || []) op.append(el("option", { value: p }, `${p}: ${names[p] || p}`));
  const pts = model.operating_points || [];
  if (pts.includes("eer") && pts.includes("fpr@0.01"))
    op.append(el("option", { value: "eer:fpr@0.01" }, "eer:fpr@0.01: an uncertain band, real below the equal error rate, fake from 1 % false positives"));
  op.append(el("option", { value: "custom" }, "a threshold of my own (or a band a:b)"));
  const custom = () => { $("custom-wrap").hidden = op.value !== "custom"; };
  op.addEventListener("change", custom);
  custom();
}

function settings() {
  const form = {};
  for (const id of ["frames", "every", "min_face_score"]) if ($(id).value !== "") form[id] = $(id).value;
  form.face_detector = $("face_detector").value || "";
  const op = $("op").value;
  if (op === "custom") { if ($("threshold").value !== "") form.threshold = $("threshold").value; }
  else if (op) form.threshold = op;
  return form;
}

// ---------------------------------------------------------------- uploads
function upload(file) {
  const form = new FormData();
  form.append("files", file, file.name);
  for (const [k, v] of Object.entries(settings())) if (v !== "") form.append(k, v);
  const row = el("li", { class: "job" }, el("span", { class: "name" }, file.name),
    el("span", { class: "badge" }, "uploading"), el("progress", { max: 100, value: 0, "aria-label": `upload of ${file.name}` }));
  $("jobs").prepend(row);
  $("empty").hidden = true;
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) row.querySelector("progress").value = 100 * e.loaded / e.total; };
    xhr.onload = () => {
      row.remove();
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body.jobs);
      } else {
        alertBox(body && body.detail ? (typeof body.detail === "string" ? body.detail : `${file.name}: ${JSON.stringify(body.detail)}`)
          : `${file.name}: the upload failed (${xhr.status})`);
        resolve([]);
      }
      refresh();
    };
    xhr.onerror = () => { row.remove(); alertBox(`${file.name}: the upload failed (no answer from the server)`); resolve([]); };
    xhr.send(form);
  });
}

function addFiles(list) {
  for (const f of Array.from(list)) upload(f);
}

function setupDrop() {
  const drop = $("drop"), input = $("files");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
}

// ---------------------------------------------------------------- the jobs
function statusText(j) {
  const p = j.progress;
  if (j.state === "queued") return "waiting for a worker";
  if (j.state === "running") {
    if (!p) return "starting";
    const r = j.result;
    const verdict = r && r.fake_probability !== null && r.fake_probability !== undefined
      ? `${r.prediction.toUpperCase()}, p(fake) ${num(r.fake_probability)}; now ` : "";
    if (p.phase === "writing the reports" || !p.total) return `${verdict}${p.phase}…`;
    return `${verdict}${p.phase}: ${p.done} of ${p.total} frames`
      + (p.eta_s !== null && p.eta_s !== undefined ? `, about ${duration(p.eta_s)} left` : "");
  }
  if (j.state === "done") {
    const r = j.result || {};
    if (r.fake_probability === null || r.fake_probability === undefined) return r.error || "no verdict";
    const low = r.threshold_lower;
    return low !== undefined && low !== null && low < j.threshold
      ? `p(fake) ${num(r.fake_probability)}, band ${num(low, 2)} to ${num(j.threshold, 2)}`
      : `p(fake) ${num(r.fake_probability)} at threshold ${num(j.threshold, 2)}`;
  }
  return j.error || j.state;
}

function badge(j) {
  if (j.state === "done" && j.result && j.result.prediction) return el("span", { class: `badge ${j.result.prediction}` }, j.result.prediction.toUpperCase());
  return el("span", { class: `badge ${j.state}` }, j.state === "done" ? "no face" : j.state);
}

async function act(method, path, what) {
  try { await api(path, { method }); } catch (e) { alertBox(`${what}: ${e.message}`); }
  refresh();
}

function jobRow(j) {
  const actions = el("span", { class: "actions" });
  if (j.state === "queued" || j.state === "running")
    actions.append(el("button", { type: "button", onclick: () => act("DELETE", `/api/jobs/${j.id}`, `cancel ${j.name}`) }, "Cancel"));
  else {
    if (j.state === "done") actions.append(el("button", { type: "button", onclick: () => select(j.id) }, "Show"));
    if (["failed", "cancelled", "interrupted"].includes(j.state))
      actions.append(el("button", { type: "button", onclick: () => act("POST", `/api/jobs/${j.id}/rerun`, `run ${j.name} again`) }, "Run again"));
    actions.append(el("button", { type: "button", onclick: () => { if (confirm(`Delete ${j.name} and its files?`)) { if (selected === j.id) select(null); act("DELETE", `/api/jobs/${j.id}`, `delete ${j.name}`); } } }, "Delete"));
  }
  const when = new Date(j.created * 1000).toLocaleString();
  const row = el("li", { class: "job" + (selected === j.id ? " selected" : ""), "data-id": j.id, "data-state": j.state },
    el("span", {}, el("span", { class: "name" }, j.name), " ", badge(j)), actions,
    el("span", { class: "status" }, `${j.kind}, ${when}: `, statusText(j)));
  if (j.state === "running" && j.progress && j.progress.total)
    row.append(el("progress", { max: j.progress.total, value: j.progress.done, "aria-label": `progress of ${j.name}` }));
  return row;
}

function renderJobs() {
  const list = $("jobs");
  const uploading = Array.from(list.querySelectorAll("li:not([data-id])"));
  list.replaceChildren(...uploading, ...jobs.map(jobRow));
  $("empty").hidden = jobs.length + uploading.length > 0;
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    jobs = (await api("/api/jobs")).jobs;
    renderJobs();
    if (selected) {
      const j = jobs.find((x) => x.id === selected);
      if (!j) select(null);
      else if (`${j.id}:${j.state}` !== shownKey) showResult(j);
    }
  } catch (e) { /* the next poll tries again */ }
  const busy = jobs.some((j) => j.state === "queued" || j.state === "running");
  timer = setTimeout(refresh, busy ? 700 : 4000);
}

// ---------------------------------------------------------------- the result
function select(id) {
  selected = id;
  shownKey = null;
  const j = jobs.find((x) => x.id === id);
  if (!j) { $("result").hidden = true; renderJobs(); return; }
  renderJobs();
  showResult(j);
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
  $("result-title").focus({ preventScroll: true });
}

function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter((p) => p && p[1] !== null && p[1] !== undefined && p[1] !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function table(head, rows, cls) {
  return el("div", { class: "table-wrap" + (cls ? " " + cls : "") },
    el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

function showResult(j) {
  shownKey = `${j.id}:${j.state}`;
  const body = $("result-body");
  const r = j.result || {};
  const files = new Set(j.files || []);
  const link = (name) => j.links[name];
  const verdict = r.fake_probability === null || r.fake_probability === undefined ? (r.error || "no verdict") : r.prediction.toUpperCase();
  const threshold = (r.threshold !== undefined ? r.threshold : j.threshold);
  const lower = (r.threshold_lower !== undefined && r.threshold_lower !== null ? r.threshold_lower : threshold);
  const source = r.threshold_source || j.threshold_source;
  const level = r.threshold_level ? `, ${r.threshold_level}-level` : "";
  const bound = r.threshold_fpr_upper !== undefined && r.threshold_fpr_upper !== null ? `; validation FPR at most ${num(r.threshold_fpr_upper, 4)} (95 %)` : "";
  const unsupported = r.threshold_supported === false ? "; not supported by the validation data (too few real samples)" : "";
  const judgedBy = (lower < threshold ? `uncertain from ${num(lower, 4)}, fake from ${num(threshold, 4)}` : num(threshold, 4))
    + (source ? ` (${source}${level}${bound})` : "") + unsupported;
  const judge = (p) => (p >= threshold ? "fake" : p < lower ? "real" : "uncertain");
  const parts = [
    el("p", { class: "muted" }, j.name),
    el("p", { class: `verdict ${r.prediction || ""}`, id: "verdict" }, verdict),
    facts([
      [model && model.calibration ? "fake probability (calibrated)" : "fake probability", el("span", { id: "probability" }, num(r.fake_probability))],
      ["raw probability (before calibration)", r.raw_probability !== undefined && model && model.calibration ? num(r.raw_probability) : null],
      [lower < threshold ? "judged by the band" : "judged by the threshold", el("span", { id: "judged-by", class: r.threshold_supported === false ? "unsupported" : "" }, judgedBy)],
      // a photo: one face, one person; a video: tracks, of which those seen long enough are persons
      r.kind === "photo" ? ["persons (one per face)", r.frames_or_faces]
        : ["frames of the deciding person", r.frames_or_faces],
      r.kind === "photo" ? null : ["face tracks / persons", `${r.tracks} / ${r.persons}`],
      ["time", j.seconds ? `verdict in ${duration(j.seconds.verdict)}, evidence in ${duration(j.seconds.total)}` : null],
    ]),
    el("div", { class: "downloads" },
      el("a", { href: link("report.pdf"), download: "" }, "Report (PDF)"),
      el("a", { href: link("report.html"), download: "" }, "Report (HTML)"),
      el("a", { href: link("report.json"), download: "" }, "Record (JSON)"),
      el("a", { href: link("records.csv"), download: "" }, "Record (CSV)"),
      el("a", { href: link("faces.csv"), download: "" }, "Faces per frame (CSV)"),
      files.has("video_annotated.mp4") ? el("a", { href: link("video_annotated.mp4"), download: "annotated.mp4" }, "Annotated video") : null),
  ];
  const persons = j.persons || [];
  if (persons.length) {
    parts.push(el("h3", {}, r.kind === "photo" ? "Faces" : "Persons"));
    parts.push(table(["track", r.kind === "photo" ? "faces" : "frames", "mean p(fake)", "highest", "verdict", ""],
      persons.map((p) => el("tr", { class: p.decides ? "decides" : "" },
        el("td", {}, `#${p.track}`), el("td", {}, p.frames), el("td", {}, num(p.fake_probability)),
        el("td", {}, num(p.max_probability)),
        el("td", {}, judge(p.fake_probability)),
        el("td", {}, p.decides ? "decides the verdict" : (p.person ? "" : "seen too briefly to count"))))));
  }
  const media = el("div", { class: "media" });
  if (files.has("video_annotated.mp4"))
    media.append(el("figure", {}, el("video", { id: "annotated", controls: true, preload: "metadata", playsinline: true, src: link("video_annotated.mp4") }),
      el("figcaption", {}, "The annotated video: each face boxed in its colour, its track and probability.")));
  if (files.has("photo_annotated.png"))
    media.append(el("figure", {}, el("img", { src: link("photo_annotated.png"), alt: "the photo with each face boxed and scored" }),
      el("figcaption", {}, "Each face boxed and scored.")));
  if (files.has("video_timeline.png"))
    media.append(el("figure", {}, el("img", { src: link("video_timeline.png"), alt: "fake probability over time, per track; the threshold dashed" }),
      el("figcaption", {}, "The timeline: fake probability over time per person; the deciding one drawn thick.")));
  if (media.children.length) parts.push(el("h3", {}, "Evidence"), media);
  const heat = Object.entries(j.heat_maps || {});
  if (heat.length) {
    parts.push(el("h3", {}, "Heat maps per face"));
    parts.push(el("div", { class: "heat" }, heat.map(([track, h]) => el("figure", {},
      el("img", { src: link(h.file), alt: `track #${track}: the face, its reconstruction and the evidence maps` }),
      el("figcaption", {}, `#${track}, frame ${h.frame} (${num(h.time, 2)} s), p(fake) ${num(h.fake_probability)}`)))));
  }
  const faces = r.faces || [];
  if (faces.length) {
    parts.push(el("h3", {}, "Faces, frame by frame"));
    parts.push(table(["frame", "time (s)", "track", "box", "detector score", "p(fake)"],
      faces.map((f) => el("tr", {}, el("td", {}, f.frame), el("td", {}, num(f.time, 3)), el("td", {}, `#${f.track}`),
        el("td", {}, `${Math.round(f.x1)},${Math.round(f.y1)} – ${Math.round(f.x2)},${Math.round(f.y2)}`),
        el("td", {}, num(f.detector_score)), el("td", {}, num(f.fake_probability)))), "scroll"));
  }
  body.replaceChildren(...parts);
  $("result").hidden = false;
}

$("result-title").tabIndex = -1;
setupDrop();
loadModel().then(refresh);
