// Dyno console: the only script. Pages work without it; it adds copy
// buttons and asks before destructive one-click actions.
"use strict";
document.addEventListener("click", function (e) {
  var copy = e.target.closest("button[data-copy]");
  if (copy) {
    var source = document.getElementById(copy.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent).then(function () {
        copy.textContent = "Copied";
      });
    }
    return;
  }
  var confirmed = e.target.closest("button[data-confirm]");
  if (confirmed && !window.confirm(confirmed.getAttribute("data-confirm"))) {
    e.preventDefault();
  }
});
