// VeilStream console: timeline, player with a frame-accurate scrubber, subject box, jobs.
// Plain JavaScript, no build step. Every POST carries the session's CSRF token.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (sel) => document.querySelector(sel);

  async function api(url, body, method) {
    const r = await fetch(url, {
      method: method || "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "Accept": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await r.json(); } catch (e) { data = { error: "HTTP " + r.status }; }
    if (!r.ok) { const err = new Error(data.error || ("HTTP " + r.status)); err.status = r.status; throw err; }
    return data;
  }
  window.veilApi = api;

  const isoOf = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");

  // ------------------------------------------------------------ forms posting JSON
  document.querySelectorAll("form.api-form").forEach((form) => {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = Object.fromEntries(new FormData(form).entries());
      if (ev.submitter && ev.submitter.name) body[ev.submitter.name] = ev.submitter.value;
      const out = form.querySelector("output");
      out.textContent = "working…";
      try {
        const res = await api(form.dataset.api, body);
        if (form.dataset.follow && res[form.dataset.follow]) { window.location = res[form.dataset.follow]; return; }
        out.textContent = JSON.stringify(res, null, 1);
      } catch (e) { out.textContent = "error: " + e.message; }
    });
  });

  // ------------------------------------------------------------ timeline + player
  const tlNode = $("#timeline-data");
  const tl = tlNode ? JSON.parse(tlNode.textContent) : null;
  const video = $("#player");
  let current = -1;

  function renderTimeline() {
    const box = $("#timeline");
    if (!box || !tl || !tl.segments.length) return;
    const t0 = Math.min(...tl.segments.map((s) => s.start_ms));
    const t1 = Math.max(...tl.segments.map((s) => s.end_ms));
    const pct = (t) => (100 * (t - t0) / Math.max(1, t1 - t0)) + "%";
    tl.segments.forEach((s, i) => {
      const d = document.createElement("div");
      d.className = "seg"; d.dataset.index = i;
      d.style.left = pct(s.first_frame_ms); d.style.width = "calc(" + pct(s.last_frame_ms) + " - " + pct(s.first_frame_ms) + ")";
      d.title = s.start + " → " + s.end + " · " + s.frames + " frames" + (s.fail_closed_frames ? " · " + s.fail_closed_frames + " fail-closed" : "");
      d.addEventListener("click", () => play(i));
      box.appendChild(d);
      s.fail_closed_pts_ms.forEach((p) => {
        const f = document.createElement("div");
        f.className = "fc"; f.style.left = pct(p); f.title = "fail-closed frame " + isoOf(p);
        box.appendChild(f);
      });
    });
    [t0, (t0 + t1) / 2, t1].forEach((t, k) => {
      const tick = document.createElement("span");
      tick.className = "tick"; tick.style.left = k === 2 ? "calc(100% - 5em)" : pct(t);
      tick.textContent = new Date(t).toISOString().substr(11, 8);
      box.appendChild(tick);
    });
  }

  const seg = () => (tl && current >= 0 ? tl.segments[current] : null);
  const fps = () => (seg() ? seg().fps || 25 : 25);
  const frameNow = () => Math.max(0, Math.floor(video.currentTime * fps() + 1e-3));

  function showFrame() {
    const s = seg(); if (!s) return;
    const f = Math.min(frameNow(), Math.max(0, s.frames - 1));
    const sc = $("#scrubber"); if (sc && document.activeElement !== sc) sc.value = f;
    const info = $("#frame-info");
    if (info) info.textContent = "frame " + f + " / " + (s.frames - 1) + " · " + isoOf(s.first_frame_ms + Math.round(video.currentTime * 1000));
  }

  function seekFrame(f) {
    const s = seg(); if (!s) return;
    f = Math.max(0, Math.min(s.frames - 1, f));
    video.pause();
    video.currentTime = (f + 0.5) / fps();  // the middle of frame f: no rounding onto its neighbour
  }

  function play(i, autoplay) {
    if (!video || !tl || i < 0 || i >= tl.segments.length) return;
    current = i;
    const s = tl.segments[i];
    document.querySelectorAll(".timeline .seg").forEach((d) => d.classList.toggle("active", +d.dataset.index === i));
    video.src = "/api/segments/" + s.key;
    const sc = $("#scrubber"); if (sc) { sc.max = Math.max(0, s.frames - 1); sc.value = 0; }
    const np = $("#now-playing"); if (np) np.textContent = "segment " + (i + 1) + " of " + tl.segments.length + ": " + s.start + " → " + s.end + " (" + s.fps + " fps)";
    video.dataset.segment = String(i);
    if (autoplay !== false) video.play().catch(() => {});
  }
  window.veilPlay = play;

  if (video && tl && tl.segments.length) {
    renderTimeline();
    video.addEventListener("ended", () => { if (current + 1 < tl.segments.length) play(current + 1); });  // play on
    video.addEventListener("timeupdate", showFrame);
    video.addEventListener("seeked", showFrame);
    if (video.requestVideoFrameCallback) {
      const cb = () => { showFrame(); video.requestVideoFrameCallback(cb); };
      video.requestVideoFrameCallback(cb);
    }
    const sc = $("#scrubber");
    if (sc) sc.addEventListener("input", () => seekFrame(+sc.value));
    const prev = $("#prev-frame"), next = $("#next-frame");
    if (prev) prev.addEventListener("click", () => seekFrame(frameNow() - 1));
    if (next) next.addEventListener("click", () => seekFrame(frameNow() + 1));
    document.querySelectorAll("button.play").forEach((b) => b.addEventListener("click", () => play(+b.dataset.index)));
    const want = new URLSearchParams(location.search).get("key");
    const start = Math.max(0, tl.segments.findIndex((s) => s.key === want));
    play(start, false);
  } else { renderTimeline(); }

  // ------------------------------------------------------------ subject box
  const canvas = $("#box-canvas");
  if (canvas && video) {
    let drag = null, box = null;
    const scale = () => video.videoWidth / canvas.clientWidth;
    const draw = () => {
      canvas.width = canvas.clientWidth; canvas.height = canvas.clientHeight;
      const g = canvas.getContext("2d");
      g.clearRect(0, 0, canvas.width, canvas.height);
      if (!box) return;
      g.strokeStyle = "#00e676"; g.lineWidth = 3;
      const k = 1 / scale();
      g.strokeRect(box.x * k, box.y * k, box.w * k, box.h * k);
    };
    const at = (ev) => { const r = canvas.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; };
    canvas.addEventListener("mousedown", (ev) => { video.pause(); drag = at(ev); });
    canvas.addEventListener("mousemove", (ev) => {
      if (!drag) return;
      const [x, y] = at(ev), k = scale();
      box = { x: Math.round(Math.min(x, drag[0]) * k), y: Math.round(Math.min(y, drag[1]) * k),
              w: Math.round(Math.abs(x - drag[0]) * k), h: Math.round(Math.abs(y - drag[1]) * k) };
      draw();
    });
    window.addEventListener("mouseup", () => {
      if (!drag) return; drag = null;
      if (!box || box.w < 2 || box.h < 2) return;
      const s = seg();
      $("#box").value = [box.x, box.y, box.w, box.h].join(",");
      $("#at").value = isoOf(s.first_frame_ms + Math.round(video.currentTime * 1000));
    });
    window.addEventListener("resize", draw);
    window.veilSetBox = (b) => { box = b; draw(); $("#box").value = [b.x, b.y, b.w, b.h].join(","); $("#at").value = isoOf(seg().first_frame_ms + Math.round(video.currentTime * 1000)); };
    $("#subject-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = $("#subject-result");
      const parts = ($("#box").value || "").split(",").map(Number);
      if (parts.length !== 4) { out.textContent = "draw a box around the person first"; return; }
      const body = { camera_id: ev.target.camera_id.value, from: $("#from").value, to: $("#to").value, case: $("#case").value,
                     subject: { x: parts[0], y: parts[1], w: parts[2], h: parts[3], at: $("#at").value } };
      out.textContent = "submitting…";
      try { const res = await api("/api/subject-requests", body); window.location = res.url; }
      catch (e) { out.textContent = "error: " + e.message; }
    });
  }

  // ------------------------------------------------------------ job page
  const jobNode = $("#job");
  if (jobNode) {
    const id = jobNode.dataset.job;
    const poll = async () => {
      let j;
      try { j = await api("/api/jobs/" + id, undefined, "GET"); } catch (e) { $("#job-message").textContent = e.message; return; }
      $("#job-progress").value = j.progress; $("#job-state").textContent = j.state; $("#job-message").textContent = j.message;
      if (j.state === "done" || j.state === "released") {
        $("#job-result").hidden = false;
        const pv = $("#preview");
        if (!pv.src) pv.src = "/api/jobs/" + id + "/files/video";
        if (!$("#job-report").textContent) $("#job-report").textContent = JSON.stringify(j.result.report || j.result, null, 1);
        if (j.released.length) { const r = j.released[j.released.length - 1]; showLink(r); }
        return;
      }
      if (j.state !== "failed") setTimeout(poll, 700);
    };
    const showLink = (r) => {
      const p = $("#release-link"); p.innerHTML = "";
      if (r.revoked_at) { p.textContent = "link revoked at " + r.revoked_at; return; }
      const a = document.createElement("a"); a.href = r.url; a.id = "shared-link"; a.textContent = r.url;
      p.append(a, " (valid until " + r.expires_at + ") ");
      if (r.revoke) {  // revoke before it expires (recorded)
        const b = document.createElement("button"); b.type = "button"; b.id = "revoke-link"; b.textContent = "Revoke link";
        b.addEventListener("click", async () => {
          try { const x = await api(r.revoke, {}); showLink({ ...r, revoked_at: x.revoked_at }); } catch (e) { p.append(" error: " + e.message); }
        });
        p.append(b);
      }
    };
    $("#release").addEventListener("click", async () => {
      try { showLink(await api("/api/jobs/" + id + "/release", {})); } catch (e) { $("#release-link").textContent = "error: " + e.message; }
    });
    poll();
  }
})();
