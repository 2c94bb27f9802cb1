/* The printable report: its Print button. The kiosk's Chromium has no menu and no keyboard
   for Ctrl+P, so printing must be a button on the page. Plain JS. */
"use strict";
document.getElementById("print").addEventListener("click", function () { window.print(); });
