/* GlanceSeg on-screen keyboard. The kiosk (cage + Chromium) has no system on-screen keyboard and
   the station has no physical one, so every text field (name, PIN, patient ID) would be out of
   reach by touch. A tap on a field opens this keyboard at the bottom of the screen: digits only
   for PIN fields (inputmode=numeric), letters, digits and . - _ space otherwise. A key typed on a
   real keyboard closes it (a technician with a keyboard does not need it). Plain JS. */
"use strict";
(function () {
  var FIELDS = 'input:not([type]), input[type=text], input[type=password], input[type=search], input[type=number]';
  var TEXT_ROWS = ["1234567890", "qwertyuiop", "asdfghjkl-", "zxcvbnm._"];
  var kb = null, target = null, shift = false, tapped = null;

  function fire(el) { el.dispatchEvent(new Event("input", {bubbles: true})); }
  function key(label, action, cls) {
    var b = document.createElement("button");
    b.type = "button"; b.tabIndex = -1; b.textContent = label;
    b.className = "osk-key" + (cls ? " " + cls : "");
    b.setAttribute("data-key", action);
    return b;
  }
  function row(keys) {
    var r = document.createElement("div"); r.className = "osk-row";
    keys.forEach(function (k) { r.appendChild(k); });
    return r;
  }
  function build(numeric) {
    var box = document.createElement("div");
    box.id = "osk"; box.className = "osk" + (numeric ? " osk-numeric" : "");
    box.setAttribute("role", "group"); box.setAttribute("aria-label", "On-screen keyboard");
    var rows = numeric ? ["123", "456", "789"] : TEXT_ROWS;
    rows.forEach(function (chars, i) {
      var keys = chars.split("").map(function (c) { return key(c, "char:" + c); });
      if (!numeric && i === 3) { keys.unshift(key("\u21E7", "shift", "osk-wide")); }
      box.appendChild(row(keys));
    });
    var last = numeric ? [key("\u2715", "hide"), key("0", "char:0"), key("\u232B", "back")]
                       : [key("\u2715", "hide"), key("space", "char: ", "osk-space"), key("\u232B", "back", "osk-wide")];
    last.push(key("OK", "enter", "osk-wide primary"));
    box.appendChild(row(last));
    /* Keep the field focused: a key must not take the focus (and the caret) from it. */
    box.addEventListener("pointerdown", function (e) { e.preventDefault(); });
    box.addEventListener("mousedown", function (e) { e.preventDefault(); });
    box.addEventListener("click", function (e) {
      var b = e.target.closest("button[data-key]");
      if (b && target) { press(b.getAttribute("data-key")); }
    });
    return box;
  }
  function setShift(on) {
    shift = on;
    if (!kb) { return; }
    Array.prototype.forEach.call(kb.querySelectorAll("button[data-key^='char:']"), function (b) {
      var c = b.getAttribute("data-key").slice(5);
      if (c !== " ") { b.textContent = on ? c.toUpperCase() : c; }
    });
    var s = kb.querySelector("button[data-key=shift]");
    if (s) { s.setAttribute("aria-pressed", on ? "true" : "false"); }
  }
  function press(action) {
    var el = target;
    if (action.indexOf("char:") === 0) {
      var c = action.slice(5);
      if (shift) { c = c.toUpperCase(); setShift(false); }
      var max = el.maxLength > 0 ? el.maxLength : Infinity;
      if (el.value.length < max) { el.value += c; fire(el); }
    } else if (action === "back") {
      el.value = el.value.slice(0, -1); fire(el);
    } else if (action === "shift") {
      setShift(!shift);
    } else if (action === "hide") {
      hide(); el.blur(); return;
    } else if (action === "enter") {
      enter(el); return;
    }
    el.focus();
  }
  /* OK: on to the form's next empty field, else submit the form (its own checks run). */
  function enter(el) {
    var form = el.form;
    if (!form) { hide(); el.blur(); return; }
    var fields = Array.prototype.slice.call(form.querySelectorAll(FIELDS));
    var next = fields.slice(fields.indexOf(el) + 1).filter(function (f) { return !f.value; })[0];
    if (next) { next.focus(); show(next); return; }
    hide();
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  }
  function show(el) {
    var numeric = el.getAttribute("inputmode") === "numeric";
    if (!kb || kb.classList.contains("osk-numeric") !== numeric) {
      if (kb) { kb.remove(); }
      kb = build(numeric); document.body.appendChild(kb); setShift(false);
    }
    target = el;
    kb.classList.remove("hidden");
    document.body.classList.add("osk-open");
    document.body.style.paddingBottom = kb.offsetHeight + "px";
    /* The field near the top of what the keyboard leaves free, so the fields and the button
       after it stay visible and tappable above the keyboard. */
    var label = el.closest("label") || el, top = label.getBoundingClientRect().top;
    window.scrollBy(0, top - 8);
  }
  function hide() {
    if (kb) { kb.classList.add("hidden"); }
    document.body.classList.remove("osk-open");
    document.body.style.paddingBottom = "";
    target = null;
  }
  /* Opened by a tap (or click) on a field, not by a script's focus or the Tab key. */
  document.addEventListener("pointerdown", function (e) {
    tapped = e.target.closest ? e.target.closest(FIELDS) : null;
    if (tapped && !tapped.readOnly && !tapped.disabled) { show(tapped); }
  }, true);
  document.addEventListener("focusin", function (e) {
    if (kb && !kb.classList.contains("hidden") && e.target.matches && e.target.matches(FIELDS)) { target = e.target; }
  });
  document.addEventListener("focusout", function () {
    setTimeout(function () {
      var a = document.activeElement;
      if (!(a && a.matches && a.matches(FIELDS))) { hide(); }
    }, 0);
  });
  document.addEventListener("keydown", function (e) { if (e.isTrusted) { hide(); } }, true);
})();
