// glioseg serve: the page. Talks to the app's JSON API only (same origin); NiiVue comes from
// /static/niivue.umd.js (nilearn's copy), so nothing is fetched from the network.
"use strict";

const state = { view: 3, info: null, job: null, contrast: "t1c", hidden: new Set(), opacity: 0.5, nv: null, polling: null };
const $ = (sel) => document.querySelector(sel);

function api(path, options = {}) {
  // X-Glioseg marks the request as coming from this page (the server refuses changes without it)
  const headers = Object.assign({ "X-Glioseg": "1" }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `about ${Math.max(1, Math.round(s))} s left`;
  return `about ${Math.round(s / 60)} min left`;
}

async function loadInfo() {
  state.info = await (await api("api/info")).json();
  const m = state.info.model;
  $("#model").textContent = `model ${m.name}${m.version ? " " + m.version : ""} (${m.members} member${m.members > 1 ? "s" : ""})`;
  $("#notes").replaceChildren(...m.notes.map((n) => el("li", { text: "warning: " + n })));
}

function folderProblem(folder) {
  // checked here too, so a folder over the limits is not sent only to be refused
  const limits = state.info.limits;
  let bytes = 0;
  for (const f of folder) bytes += f.size;
  if (folder.length > limits.max_files) {
    return `The folder holds ${folder.length} files, more than the limit of ${limits.max_files}; choose the study's folder only, or zip it.`;
  }
  if (bytes > limits.max_request_bytes) {
    return `The folder holds ${Math.round(bytes / 2 ** 20)} MiB, more than the limit of ${Math.round(limits.max_request_bytes / 2 ** 20)} MiB.`;
  }
  return "";
}

async function upload(event) {
  event.preventDefault();
  const files = $("#files").files, folder = $("#folder").files;
  $("#upload-error").textContent = "";
  if (!files.length && !folder.length) { $("#upload-error").textContent = "Choose four NIfTI files, one zip or a folder first."; return; }
  const form = new FormData();
  if (folder.length) {
    const problem = folderProblem(folder);
    if (problem) { $("#upload-error").textContent = problem; return; }
    // each file under its path inside the folder (DICOM files often have no extension)
    for (const f of folder) form.append("folder", f, f.webkitRelativePath || f.name);
  } else {
    for (const f of files) form.append("files", f, f.name);
  }
  $("#submit").disabled = true;
  try {
    const response = await api("api/jobs", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ detail: `the server answered ${response.status}` }));
    if (!response.ok) { $("#upload-error").textContent = body.detail; return; }
    $("#files").value = ""; $("#folder").value = "";
    state.job = body.id;
    await refreshJobs();
  } catch (err) {
    $("#upload-error").textContent = `The upload failed: ${err}`;
  } finally {
    $("#submit").disabled = false;
  }
}

async function refreshJobs() {
  const jobs = await (await api("api/jobs")).json();
  const rows = jobs.map((job) => {
    const bar = el("progress", { max: "1", value: String(job.progress) });
    const detail = job.state === "failed" ? job.message
      : job.state === "queued" ? `${job.message ? job.message + "; " : ""}${job.position} job(s) ahead; ${fmtSeconds(job.remaining_s)}`
      : job.state === "done" ? ""
      : job.overdue ? "taking longer than estimated (a busy machine?); still running"
      : fmtSeconds(job.remaining_s);
    const stateCell = el("td", { class: "state" }, el("strong", { text: job.state }), el("br"), el("span", { class: "small", text: detail }));
    const actions = el("td");
    if (job.state === "done") {
      const view = el("button", { class: "view", text: "view" });
      view.onclick = () => showJob(job.id);
      actions.append(view);
    }
    if (job.state !== "preparing" && job.state !== "segmenting") {
      const del = el("button", { class: "delete", text: "delete" });
      del.onclick = async () => {
        if (!confirm(`Delete the job of ${job.case_id} and its files?`)) return;
        await api(`api/jobs/${job.id}`, { method: "DELETE" });
        if (state.shown === job.id) { $("#viewer").hidden = true; $("#panel").hidden = true; state.shown = null; }
        refreshJobs();
      };
      actions.append(del);
    }
    const row = el("tr", { "data-job": job.id, "data-state": job.state }, el("td", { text: job.case_id }), stateCell, el("td", {}, bar), actions);
    if (job.id === state.shown) row.classList.add("selected");
    return row;
  });
  $("#jobs tbody").replaceChildren(...rows);
  const mine = jobs.find((j) => j.id === state.job);
  if (mine && mine.state === "done" && state.shown !== mine.id) { state.job = null; showJob(mine.id); }
}

function labelColormap() {
  const labels = state.info.labels;
  const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
  for (const value of ["1", "2", "3"]) {
    const [r, g, b] = labels[value].rgb;
    cm.R.push(r); cm.G.push(g); cm.B.push(b);
    cm.A.push(state.hidden.has(value) ? 0 : 255);
    cm.I.push(Number(value)); cm.labels.push(labels[value].name);
  }
  return cm;
}

function applyOverlay() {
  const nv = state.nv;
  if (!nv || nv.volumes.length < 2) return;
  const seg = nv.volumes[1];
  seg.setColormapLabel(labelColormap());
  seg.opacity = state.opacity;
  nv.updateGLVolume();
}

async function loadVolumes(jobId) {
  const nv = state.nv;
  const base = `api/jobs/${jobId}/files`;
  await nv.loadVolumes([
    { url: `${base}/${state.contrast}.nii.gz`, name: `${state.contrast}.nii.gz`, colormap: "gray" },
    { url: `${base}/labels.nii.gz`, name: "labels.nii.gz", opacity: state.opacity },
  ]);
  applyOverlay();
  nv.setSliceType(state.view);
  const centre = state.summary && state.summary.centre_mm;  // world mm: independent of the file's voxel order
  if (centre) { nv.scene.crosshairPos = nv.mm2frac(centre); nv.drawScene(); }
  document.body.dataset.viewer = "ready";
}

async function showJob(jobId) {
  const job = await (await api(`api/jobs/${jobId}`)).json();
  if (job.state !== "done" || !job.summary) return;
  state.shown = jobId;
  state.summary = job.summary;
  document.body.dataset.viewer = "loading";
  $("#viewer").hidden = false; $("#panel").hidden = false;
  fillPanel(job);
  if (!state.nv) {
    state.nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [0.2, 0.6, 1.0, 1.0], crosshairWidth: 1, show3Dcrosshair: true,
      multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS, dragAndDropEnabled: false,
      onLocationChange: (data) => { $("#location").textContent = data.string; },
    });
    await state.nv.attachToCanvas($("#gl"));
  }
  await loadVolumes(jobId);
  refreshJobs();
}

function fillPanel(job) {
  const s = job.summary;
  $("#case-title").textContent = s.case_id;
  $("#case-warnings").replaceChildren(...[...s.warnings, ...s.quality_warnings].map((w) => el("li", { text: "warning: " + w })));
  const rows = ["WT", "TC", "ET", "NETC", "SNFH"].map((r) =>
    el("tr", {}, el("td", { text: r }),
      el("td", { class: "num", id: `vol-${r}`, "data-ml": String(s.volumes_ml[r]), text: s.volumes_ml[r].toFixed(1) }),
      el("td", { class: "num", text: r in s.lesions ? String(s.lesions[r]) : "" })));
  $("#volumes tbody").replaceChildren(...rows);
  $("#quality").replaceChildren(...Object.entries(s.quality).map(([m, q]) =>
    el("li", { text: `${m}: SNR ${q.snr.toFixed(1)}, through-plane sharpness ${q.sharpness.toFixed(2)}` })));
  $("#uncertainty").textContent = s.uncertainty
    ? Object.entries(s.uncertainty).map(([r, v]) => `${r} ${v.toFixed(4)}`).join(", ") + " (0 = members agree)"
    : "Not available: one model (an ensemble gives it).";
  const names = { labels: "label map (.nii.gz)", native: "label map on the original scan grid", report: "HTML report", pdf: "PDF report", record: "provenance (.json)" };
  $("#downloads").replaceChildren(...Object.keys(names).filter((k) => s.files[k]).map((k) =>
    el("li", {}, el("a", { id: `dl-${k}`, href: `api/jobs/${job.id}/files/${k}`, download: s.files[k], text: names[k] }))));
  $("#provenance").textContent = s.models.map((m) => `${m.name} ${m.version || ""}, SHA-256 ${String(m.checksum_sha256).slice(0, 16)}...`).join("; ")
    + ` · mode ${s.settings.mode} · ${s.date_utc} · glioseg ${s.glioseg_version}`;
}

function buildControls() {
  $("#contrasts").replaceChildren(...["t1n", "t1c", "t2w", "t2f"].map((c) => {
    const b = el("button", { "data-contrast": c, text: c });
    if (c === state.contrast) b.classList.add("active");
    b.onclick = async () => {
      state.contrast = c;
      document.querySelectorAll("#contrasts button").forEach((x) => x.classList.toggle("active", x === b));
      if (state.shown) await loadVolumes(state.shown);
    };
    return b;
  }));
  $("#labels").replaceChildren(...["1", "2", "3"].map((v) => {
    const { name, rgb } = state.info.labels[v];
    const box = el("input", { type: "checkbox", id: `label-${v}`, checked: "" });
    box.onchange = () => { box.checked ? state.hidden.delete(v) : state.hidden.add(v); applyOverlay(); };
    const swatch = el("span", { class: "swatch", style: `background: rgb(${rgb.join(",")})` });
    return el("label", {}, box, swatch, `${v} ${name}`);
  }));
  document.querySelectorAll("#views button").forEach((b) => {
    b.onclick = () => { state.view = Number(b.dataset.view); if (state.nv) state.nv.setSliceType(state.view); };
  });
  $("#opacity").oninput = (e) => { state.opacity = Number(e.target.value); applyOverlay(); };
}

async function main() {
  await loadInfo();
  buildControls();
  $("#upload").addEventListener("submit", upload);
  // files or a folder, not both: choosing one clears the other
  $("#files").addEventListener("change", () => { if ($("#files").files.length) $("#folder").value = ""; });
  $("#folder").addEventListener("change", () => { if ($("#folder").files.length) $("#files").value = ""; });
  await refreshJobs();
  state.polling = setInterval(refreshJobs, 1000);
}

main();
