// pgqueue dashboard: live refresh of the overview and "select all" on the failed archive.
// Loaded from /static (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";

  var live = document.querySelector("[data-live]");
  var status = document.querySelector("[data-live-status]");
  if (live) {
    var url = live.getAttribute("data-live");
    var every = Math.max(0.2, Number(live.getAttribute("data-refresh")) || 5) * 1000;
    var busy = false;
    var tick = function () {
      // not while hidden, nor while the keyboard focus is inside (a pause button, say)
      if (busy || document.hidden || live.contains(document.activeElement)) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.text();
        })
        .then(function (html) {
          // server-rendered and escaped by Jinja2's autoescape; no script runs from it
          live.innerHTML = html;
          if (status) { status.textContent = "live"; status.classList.remove("bad"); }
        })
        .catch(function (e) {
          if (status) { status.textContent = "refresh failed (" + e.message + ")"; status.classList.add("bad"); }
        })
        .finally(function () { busy = false; });
    };
    window.setInterval(tick, every);
  }

  document.querySelectorAll("[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      var form = all.closest("form");
      form.querySelectorAll("input[type=checkbox][name=id]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
})();
