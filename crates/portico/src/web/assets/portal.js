// Portico patient portal: progressive enhancement only. Every page works without
// this script; it adds the session-timeout warning and the print button.
(function () {
  "use strict";

  // The session-timeout warning: the page says when the session ends (seconds from
  // the page's rendering) and how early to warn; the warning is a real form posting
  // "stay signed in", so the script only has to show it and move focus to it.
  var warning = document.getElementById("timeout-warning");
  if (warning) {
    var expiresIn = parseInt(warning.getAttribute("data-expires-in"), 10);
    var warn = parseInt(warning.getAttribute("data-warn"), 10);
    if (expiresIn > 0 && warn > 0) {
      var showIn = Math.max(expiresIn - warn, 0) * 1000;
      window.setTimeout(function () {
        warning.hidden = false;
        var heading = warning.querySelector("h2");
        if (heading) {
          heading.setAttribute("tabindex", "-1");
          heading.focus();
        }
      }, showIn);
    }
  }

  // The print button on the printable summary.
  var buttons = document.querySelectorAll("[data-print]");
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].hidden = false;
    buttons[i].addEventListener("click", function () {
      window.print();
    });
  }

  // Move focus to the error summary so that keyboard and screen-reader users hear
  // what went wrong first.
  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
  }
})();
