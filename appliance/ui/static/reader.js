/* GlanceSeg reader: pinch zoom and pan, live lesions over server-sent events, accept / reject /
   add / undo, heat map, and pointer positions posted as gaze. The page posts its view (scale,
   pan, viewport offset) on every change and the pointer in screen px; the server maps every
   gaze source (pointer, Neon) through that view. Plain JS, no framework. */
"use strict";
(function () {
  var D = JSON.parse(document.getElementById("reader-data").textContent);
  var vp = document.getElementById("viewport"), stage = document.getElementById("stage");
  var svg = document.getElementById("overlay"), heat = document.getElementById("heat");
  var menu = document.getElementById("lesion-menu"), statusEl = document.getElementById("reader-status");
  var undoBtn = document.getElementById("undo"), countEl = document.getElementById("lesion-count");
  var NS = "http://www.w3.org/2000/svg";
  var view = {s: 1, tx: 0, ty: 0, fit: 1};
  var lesions = {};          /* id -> lesion json (+decision) */
  var current = null;        /* lesion id the menu is open for */
  window.glanceLatencies = [];  /* ms from fixation end to each lesion drawn (read by the tests) */
  window.glanceFirstDrawn = {};  /* fixation end (wall ms) -> ms to its first lesion drawn */
  window.glanceEvents = 0;

  /* Corner markers: unscaled, at the screen position screen_markers() gave (data-x, data-y). */
  Array.prototype.forEach.call(document.querySelectorAll("img.marker"), function (m) {
    m.style.left = m.getAttribute("data-x") + "px"; m.style.top = m.getAttribute("data-y") + "px";
  });

  stage.style.width = D.width + "px";
  stage.style.height = D.height + "px";

  function apply() {
    stage.style.transform = "translate(" + view.tx + "px," + view.ty + "px) scale(" + view.s + ")";
    resizeRings();
    viewChanged();
  }
  /* --- the view and the gaze go to the server on one ordered chain: a batch of pointer
     positions is always mapped with the view that was on screen when they were taken --- */
  var gazeChain = Promise.resolve(), gazeBuf = [], viewDirty = false, viewQueued = false;
  function chain(fn) { gazeChain = gazeChain.then(fn).catch(function () { return null; }); }
  function flushGaze() {
    if (!gazeBuf.length) { return; }
    var batch = gazeBuf.splice(0, 400);
    chain(function () { return window.glancePost(D.gaze_url, {samples: batch}); });
  }
  function viewChanged() {
    viewDirty = true;
    if (viewQueued) { return; }
    viewQueued = true;
    requestAnimationFrame(function () {  /* at most one view post per frame while pinching */
      viewQueued = false;
      if (!viewDirty) { return; }
      viewDirty = false;
      flushGaze();  /* positions taken under the old view go first */
      var r = vp.getBoundingClientRect();
      var body = {scale: view.s, tx: view.tx, ty: view.ty, width: r.width, height: r.height, left: r.left, top: r.top};
      chain(function () { return window.glancePost(D.view_url, body); });
    });
  }
  window.glanceFlushGaze = function () { flushGaze(); return gazeChain; };
  function fit() {
    var r = vp.getBoundingClientRect();
    view.fit = view.s = Math.min(r.width / D.width, r.height / D.height);
    view.tx = (r.width - D.width * view.s) / 2; view.ty = (r.height - D.height * view.s) / 2;
    apply();
  }
  function toImage(cx, cy) {
    var r = vp.getBoundingClientRect();
    return {x: (cx - r.left - view.tx) / view.s, y: (cy - r.top - view.ty) / view.s};
  }
  function zoomAt(cx, cy, factor) {
    var r = vp.getBoundingClientRect(), px = cx - r.left, py = cy - r.top;
    var s = Math.max(view.fit * 0.5, Math.min(view.s * factor, 16));
    view.tx = px - (px - view.tx) * s / view.s; view.ty = py - (py - view.ty) * s / view.s; view.s = s;
    apply();
  }
  window.glanceView = view; window.glanceToImage = toImage;
  window.glanceToScreen = function (x, y) {
    var r = vp.getBoundingClientRect();
    return {x: r.left + view.tx + x * view.s, y: r.top + view.ty + y * view.s};
  };

  function visible(l) { return l.decision || l.score >= D.threshold; }
  function radius(l) { return Math.max(Math.sqrt(l.area_px / Math.PI) + 4, 6); }
  /* A ring is never drawn smaller than MIN_RING_PX screen px in radius: an MA is 3-25 px of a
     4288 px photograph, and at the fitted view its true-size ring was a 2-5 px speck on the
     screen, hard to see and to aim at; zoomed in, rings keep their true size. */
  var MIN_RING_PX = 9;
  function ringRadius(l) { return Math.max(radius(l), MIN_RING_PX / view.s); }
  function resizeRings() {
    Array.prototype.forEach.call(svg.querySelectorAll("circle.lesion"), function (el) {
      var l = lesions[el.getAttribute("data-id")];
      if (l) { el.setAttribute("r", ringRadius(l)); }
    });
  }
  function draw(l) {
    var el = document.getElementById("lesion-" + l.id);
    if (!visible(l)) { if (el) { el.remove(); } return el; }
    if (!el) {
      el = document.createElementNS(NS, "circle");
      el.setAttribute("id", "lesion-" + l.id);
      el.setAttribute("vector-effect", "non-scaling-stroke");
      svg.appendChild(el);
    }
    el.setAttribute("cx", l.x); el.setAttribute("cy", l.y); el.setAttribute("r", ringRadius(l));
    el.setAttribute("data-id", l.id);
    el.setAttribute("class", "lesion " + (l.decision || "undecided"));
    return el;
  }
  function recount() {
    var n = 0, k;
    for (k in lesions) { if (visible(lesions[k]) && lesions[k].decision !== "rejected") { n++; } }
    countEl.textContent = n + " marked";
  }
  function say(t) { statusEl.textContent = t; }

  D.lesions.forEach(function (l) { lesions[l.id] = l; draw(l); });
  recount();

  /* --- heat map: gaze density with a Gaussian of one degree of visual angle (sigma) --- */
  var HEAT_SCALE = Math.max(2, Math.ceil(Math.max(D.width, D.height) / 400)), heatOn = false;
  heat.width = Math.max(1, Math.ceil(D.width / HEAT_SCALE)); heat.height = Math.max(1, Math.ceil(D.height / HEAT_SCALE));
  var hctx = heat.getContext("2d"), hgrid = new Float32Array(heat.width * heat.height), hmax = 0, hdirty = false;
  function heatAdd(x, y) {
    var sigma = Math.max(1, (D.screen_px_per_deg / view.fit) / HEAT_SCALE), r = Math.ceil(3 * sigma);
    var cx = x / HEAT_SCALE, cy = y / HEAT_SCALE, i, j;
    for (j = Math.max(0, Math.floor(cy - r)); j <= Math.min(heat.height - 1, Math.ceil(cy + r)); j++) {
      for (i = Math.max(0, Math.floor(cx - r)); i <= Math.min(heat.width - 1, Math.ceil(cx + r)); i++) {
        var v = hgrid[j * heat.width + i] += Math.exp(-((i - cx) * (i - cx) + (j - cy) * (j - cy)) / (2 * sigma * sigma));
        if (v > hmax) { hmax = v; }
      }
    }
    if (!hdirty) { hdirty = true; requestAnimationFrame(heatRender); }
  }
  function heatRender() {
    hdirty = false;
    if (!heatOn || hmax <= 0) { return; }
    var img = hctx.createImageData(heat.width, heat.height), d = img.data, k;
    for (k = 0; k < hgrid.length; k++) {
      var t = hgrid[k] / hmax;
      if (t < 0.05) { continue; }
      d[4 * k] = 255; d[4 * k + 1] = Math.round(220 * (1 - t)); d[4 * k + 2] = 0; d[4 * k + 3] = Math.round(180 * (t - 0.05) / 0.95);
    }
    hctx.putImageData(img, 0, 0);
  }
  document.getElementById("toggle-heat").addEventListener("click", function () {
    heatOn = !heatOn; heat.classList.toggle("hidden", !heatOn); heatRender();
    this.setAttribute("aria-pressed", heatOn ? "true" : "false");
  });

  /* --- live events --- */
  var es = new EventSource(D.events_url);
  es.addEventListener("lesion", function (m) {
    var ev = JSON.parse(m.data), l = ev.lesion, old = lesions[l.id];
    l.decision = old ? old.decision : null;
    lesions[l.id] = l;
    var el = draw(l);
    recount();
    window.glanceEvents++;
    if (el && visible(l) && !old) {
      requestAnimationFrame(function () {
        setTimeout(function () {
          var ms = Date.now() - ev.fixation_wall_ms, key = String(ev.fixation_wall_ms);
          window.glanceLatencies.push(ms);
          if (!(key in window.glanceFirstDrawn)) { window.glanceFirstDrawn[key] = ms; }
        }, 0);
      });
    }
  });
  /* A refused stream (too many reader pages open: 429) or a lost one is closed for good by the
     browser: live lesions stop without a sign unless the page says so. */
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED) {
      say(D.text.live_lost); document.body.setAttribute("data-live", "lost");
    }
  });
  es.addEventListener("gaze", function (m) { var g = JSON.parse(m.data); heatAdd(g.x, g.y); });
  window.addEventListener("pagehide", function () {
    es.close();
    fetch(D.close_url, {method: "POST", keepalive: true, credentials: "same-origin",
                        headers: {"X-CSRF-Token": window.glanceCsrf()}});  /* the gaze sources stop */
  });
  es.addEventListener("replay_done", function () { say(D.text.replay_done); document.body.setAttribute("data-replay-done", "1"); });

  /* --- decisions: each is recorded in the store at once; Undo undoes the latest one there.
     Requests go one after another, so the store records them in the order the clinician made
     them (a slow request never lets a later one overtake it). --- */
  var undoable = 0, queue = Promise.resolve();
  function send(url, body) {
    var p = queue.then(function () { return window.glancePost(url, body); });
    queue = p.catch(function () { return null; });
    return p;
  }
  /* A decision is drawn at once and taken back, with the reason on the status line, when the
     appliance did not record it: the screen never shows a decision the store does not hold. */
  function decide(id, decision) {
    var l = lesions[id], before = l.decision;
    l.decision = decision; draw(l); recount();
    undoable++; undoBtn.disabled = false;
    function failed(error) {
      if (l.decision === decision) { l.decision = before; draw(l); recount(); }
      undoable = Math.max(0, undoable - 1); undoBtn.disabled = undoable === 0;
      say(D.text.not_saved.replace("{error}", error || D.text.no_reply));
    }
    return send(D.decision_url, {lesion_id: id, decision: decision}).then(function (r) {
      if (!r || !r.ok) { failed(r && r.error); }
      return r;
    }, function () { failed(null); });
  }
  var addAt = null;           /* image point the menu offers to add a lesion at */
  var menuGone = null;        /* where the menu was and when it closed (an accidental second tap) */
  function placeMenu(cx, cy) {
    menu.classList.remove("hidden");
    var w = menu.offsetWidth, h = menu.offsetHeight;
    menu.style.left = Math.max(4, Math.min(cx + 12, window.innerWidth - w - 4)) + "px";
    menu.style.top = Math.max(4, Math.min(cy + 12, window.innerHeight - h - 4)) + "px";
  }
  function openMenu(id, cx, cy) {
    current = id; addAt = null;
    var l = lesions[id];
    /* Words a clinician reads, not the store's lesion id and an unlabelled number. */
    document.getElementById("lesion-info").textContent = (l.decision === "added" ? D.text.info_added : D.text.info)
      .replace("{score}", l.score.toFixed(2));
    menu.setAttribute("data-mode", "lesion");
    placeMenu(cx, cy);
  }
  function openAddMenu(p, cx, cy) {
    current = null; addAt = p;
    document.getElementById("lesion-info").textContent = D.text.add_here;
    menu.setAttribute("data-mode", "add");
    placeMenu(cx, cy);
  }
  function closeMenu() {
    if (!menu.classList.contains("hidden")) { menuGone = {r: menu.getBoundingClientRect(), t: Date.now()}; }
    menu.classList.add("hidden"); current = null; addAt = null;
  }
  document.getElementById("accept").addEventListener("click", function () { if (current !== null) { decide(current, "accepted"); } closeMenu(); });
  document.getElementById("reject").addEventListener("click", function () { if (current !== null) { decide(current, "rejected"); } closeMenu(); });
  document.getElementById("add").addEventListener("click", function () { var p = addAt; closeMenu(); if (p) { add(p); } });
  document.getElementById("menu-close").addEventListener("click", closeMenu);
  undoBtn.addEventListener("click", function () {
    send(D.undo_url, {}).then(function (r) {
      if (!r.ok) { say(r.error || ""); return; }
      undoable = Math.max(0, undoable - 1); undoBtn.disabled = undoable === 0;
      if (r.lesion_id === null) { say(D.text.nothing_to_undo); return; }
      var l = lesions[r.lesion_id];
      if (l) {
        if (r.present) { l.decision = r.decision; draw(l); }
        else { delete lesions[r.lesion_id]; var el = document.getElementById("lesion-" + r.lesion_id); if (el) { el.remove(); } }
      }
      recount(); say(D.text.undone);
    });
  });
  /* A fingertip lands a few mm off: a lesion answers a tap within 22 screen px of its edge
     (a 44 px target however small the lesion is drawn). */
  function hit(p) {
    var best = null, bestD = Infinity, tol = 22 / view.s, k;
    for (k in lesions) {
      var l = lesions[k];
      if (!visible(l)) { continue; }
      var d = Math.hypot(l.x - p.x, l.y - p.y);
      if (d <= ringRadius(l) + tol && d < bestD) { best = l; bestD = d; }
    }
    return best;
  }
  /* A tap on the photograph where the menu just closed is the second tap of a double tap on
     its button, not a new request: it is ignored. A tap on an unmarked spot only offers to add
     a lesion there (a stray tap or a pan that did not move must not put an MA in the count). */
  function tap(cx, cy) {
    var g = menuGone;
    if (g && Date.now() - g.t < 500 && cx >= g.r.left - 8 && cx <= g.r.right + 8 && cy >= g.r.top - 8 && cy <= g.r.bottom + 8) {
      menuGone = null; return;
    }
    var p = toImage(cx, cy), l = hit(p);
    if (l) { openMenu(l.id, cx, cy); return; }
    closeMenu();
    if (p.x < 0 || p.y < 0 || p.x >= D.width || p.y >= D.height) { return; }
    openAddMenu(p, cx, cy);
  }
  function add(p) {
    send(D.prompt_url, {x: p.x, y: p.y}).then(function (r) {
      if (!r.ok) { say(r.error || D.text.nothing); return; }
      r.lesion.decision = "added"; lesions[r.lesion.id] = r.lesion; draw(r.lesion); recount();
      undoable++; undoBtn.disabled = false;
      say(D.text.added);
    });
  }

  /* --- the Neon's gaze check: five targets on the server's schedule, then its verdict --- */
  var checkBtn = document.getElementById("gaze-check");
  if (checkBtn) {
    checkBtn.addEventListener("click", function () {
      var overlay = document.getElementById("gaze-check-overlay"), dot = document.getElementById("gaze-target");
      checkBtn.disabled = true;
      var done = function () { overlay.classList.add("hidden"); checkBtn.disabled = false; };
      window.glancePost(D.gaze_check_url, {}).then(function (a) {
        if (!a || !a.targets) { throw new Error("refused"); }
        say(D.text.checking);
        overlay.classList.remove("hidden");
        a.targets.forEach(function (t, k) {
          setTimeout(function () { dot.style.left = t[0] + "px"; dot.style.top = t[1] + "px"; }, k * a.target_ms);
        });
        setTimeout(function () {
          overlay.classList.add("hidden");
          window.glancePost(D.gaze_check_done_url, {}).then(function (r) {
            say(r.ok ? r.message : D.text.check_failed.replace("{message}", r.message || ""));
          }).catch(function () { say(D.text.no_reply); }).then(done);
        }, a.targets.length * a.target_ms);
      }).catch(function () { say(D.text.no_reply); done(); });
    });
  }

  /* --- pointer gaze: positions posted to the pointer gaze source --- */
  var pointerGaze = false, sourceLabel = document.querySelector("#gaze-source b");
  var sourceBefore = sourceLabel.textContent;
  document.getElementById("toggle-pointer").addEventListener("click", function () {
    pointerGaze = !pointerGaze; this.setAttribute("aria-pressed", pointerGaze ? "true" : "false");
    if (pointerGaze) { sourceBefore = sourceLabel.textContent; sourceLabel.textContent = "pointer"; }
    else {
      sourceLabel.textContent = sourceBefore;
      if (lastPointer) { gazeGone(); }
      lastPointer = null;
    }
  });
  /* A resting pointer is a steady gaze: repeat its last position every 40 ms (a tracker streams
     continuously; fixation detection needs samples, not only moves). Leaving the photograph is
     a gap (no gaze), which ends the fixation. Positions are screen px: the page's own (client)
     px, which on the full-screen kiosk are the screen's, as the corner markers assume. */
  var lastPointer = null, lastSampleMs = 0;
  /* The pointer stopped looking: a no-gaze sample now and another 100 ms on, which ends the
     fixation at the server (a gap past the detector's 75 ms), so no timer there has to guess
     from silence; silence is how a tracker's stalled network looks. */
  function gazeGone() {
    gazeBuf.push({gone: true, t_ms: performance.timeOrigin + performance.now()});
    setTimeout(function () {
      if (!lastPointer) { gazeBuf.push({gone: true, t_ms: performance.timeOrigin + performance.now()}); }
    }, 100);
  }
  function pushGaze(xs, ys, tMs) {
    gazeBuf.push({xs: xs, ys: ys, t_ms: tMs});
    lastSampleMs = tMs;
  }
  function gazeSample(e) {
    if (!pointerGaze) { return; }
    lastPointer = {xs: e.clientX, ys: e.clientY};
    pushGaze(e.clientX, e.clientY, performance.timeOrigin + e.timeStamp);
  }
  setInterval(function () {
    var now = performance.timeOrigin + performance.now();
    if (pointerGaze && lastPointer && now - lastSampleMs >= 35) {
      pushGaze(lastPointer.xs, lastPointer.ys, now);
    }
  }, 40);
  vp.addEventListener("pointerleave", function () {
    if (pointerGaze && lastPointer) { gazeGone(); }
    lastPointer = null;
  });
  setInterval(flushGaze, 100);

  /* --- the tracker's state on the badge (a Neon connects after the page opened) --- */
  var trackerState = document.getElementById("tracker-state");
  function pollTracker() {
    fetch(D.tracker_url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (t) {
      trackerState.textContent = (t.connected ? " \u25CF" : " \u25CB") + (t.battery_percent === null ? "" : " " + t.battery_percent + " %")
        + (t.worn === false ? " \u2013 " + D.text.not_worn   /* glasses off: no fixation, whatever the camera sees */
           : t.screen_found === false ? " \u2013 " + D.text.screen_not_found : "");  /* no marker in view: no gaze on the photograph */
      document.body.setAttribute("data-screen-found", t.screen_found === false ? "0" : "1");
      document.body.setAttribute("data-tracker-connected", t.connected ? "1" : "0");
    }).catch(function () { return null; });
  }
  if (D.tracker_kind === "neon") { pollTracker(); setInterval(pollTracker, 2000); }

  /* --- pinch zoom, pan, tap --- */
  var pts = {}, start = null, pinch = null;
  /* With pointer gaze on a touchscreen, a finger held on the photograph is where the clinician
     looks: its first position is a gaze sample too, and a press held longer than HOLD_MS is
     looking, not a tap (it opened the add menu after every look, and added an MA before). */
  var HOLD_MS = 400;
  vp.addEventListener("pointerdown", function (e) {
    try { vp.setPointerCapture(e.pointerId); } catch (err) { /* synthetic or already released pointer */ }
    pts[e.pointerId] = {x: e.clientX, y: e.clientY};
    var ids = Object.keys(pts);
    if (ids.length === 1) {
      start = {x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty, moved: false, t: Date.now()};
      gazeSample(e);
    }
    if (ids.length === 2) {
      var a = pts[ids[0]], b = pts[ids[1]];
      pinch = {d: Math.hypot(a.x - b.x, a.y - b.y), s: view.s, mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2};
      if (start) { start.moved = true; }
    }
  });
  vp.addEventListener("pointermove", function (e) {
    gazeSample(e);
    if (!pts[e.pointerId]) { return; }
    pts[e.pointerId] = {x: e.clientX, y: e.clientY};
    var ids = Object.keys(pts);
    if (ids.length === 2 && pinch) {
      var a = pts[ids[0]], b = pts[ids[1]], d = Math.hypot(a.x - b.x, a.y - b.y);
      zoomAt(pinch.mx, pinch.my, (pinch.s * d / pinch.d) / view.s);
    } else if (ids.length === 1 && start) {
      var dx = e.clientX - start.x, dy = e.clientY - start.y;
      if (start.moved || Math.hypot(dx, dy) > 8) {
        start.moved = true; view.tx = start.tx + dx; view.ty = start.ty + dy; apply();
      }
    }
  });
  function up(e) {
    var wasTap = start && !start.moved && Object.keys(pts).length === 1 && !(pointerGaze && Date.now() - start.t > HOLD_MS);
    delete pts[e.pointerId];
    if (Object.keys(pts).length < 2) { pinch = null; }
    if (wasTap && e.type === "pointerup") { tap(e.clientX, e.clientY); }
    if (!Object.keys(pts).length) { start = null; }
    /* A lifted finger no longer looks: end its gaze here, not only on pointerleave, which a
       captured touch pointer may not send; the resting-pointer repeat would otherwise hold the
       fixation open and no lesion would come of it. A mouse button released keeps looking. */
    if (pointerGaze && e.pointerType !== "mouse" && !Object.keys(pts).length && lastPointer) {
      lastPointer = null;
      gazeGone();
    }
  }
  vp.addEventListener("pointerup", up);
  vp.addEventListener("pointercancel", up);
  vp.addEventListener("wheel", function (e) { e.preventDefault(); zoomAt(e.clientX, e.clientY, e.deltaY < 0 ? 1.2 : 1 / 1.2); }, {passive: false});
  document.getElementById("fit").addEventListener("click", fit);
  window.addEventListener("resize", fit);

  /* --- gaze replay --- */
  document.getElementById("replay-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = document.getElementById("gaze-file").files[0];
    if (!f) { return; }
    var fd = new FormData(); fd.append("gaze", f);
    document.body.removeAttribute("data-replay-done");
    fetch(D.replay_url, {method: "POST", body: fd, credentials: "same-origin", headers: {"X-CSRF-Token": window.glanceCsrf()}})
      .then(function (r) { return r.json(); })
      .then(function (r) {
        if (r.error) { say(r.error); return; }
        say(D.text.replaying);
        sourceLabel.textContent = "replay";
      });
  });

  var img = document.getElementById("photo");
  if (img.complete) { fit(); } else { img.addEventListener("load", fit); }
  fit();
  document.body.setAttribute("data-reader-ready", "1");
})();
