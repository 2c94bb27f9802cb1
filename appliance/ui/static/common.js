/* GlanceSeg: shared page behaviour (idle log-off, CSRF header helper). Plain JS, no framework. */
"use strict";
(function () {
  var body = document.body;
  window.glanceCsrf = function () {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  };
  /* POST JSON with the CSRF token; resolves to the parsed reply. */
  window.glancePost = function (url, data) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": window.glanceCsrf()},
      body: JSON.stringify(data)
    }).then(function (r) {
      if (r.status === 401) { window.location.reload(); }
      return r.json();
    });
  };
  if (body.getAttribute("data-logged-in") !== "1") { return; }
  var idleMs = parseInt(body.getAttribute("data-idle-s"), 10) * 1000;
  var last = Date.now();
  ["pointerdown", "keydown", "wheel", "touchstart"].forEach(function (t) {
    window.addEventListener(t, function () { last = Date.now(); }, {passive: true});
  });
  /* After the log-off the login page brings the clinician back to this page (a reading left
     idle reopens on its photograph; its decisions were saved as they were made). */
  setInterval(function () {
    if (Date.now() - last > idleMs) {
      window.location.href = body.getAttribute("data-logout-url") + "?reason=idle&next=" + encodeURIComponent(window.location.pathname);
    }
  }, Math.min(5000, Math.max(1000, idleMs / 4)));
})();
