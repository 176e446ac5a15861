// Live status of a case's page: the server pushes the case's new timeline by server-sent
// events; htmx's polling of the timeline stays as the fallback. A file of its own: the
// Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  function connect() {
    var page = document.querySelector("[data-live]");
    if (!page || !window.EventSource || !window.htmx) return;
    var source = new EventSource(page.getAttribute("data-live"));
    source.addEventListener("timeline", function (event) {
      var current = document.getElementById("timeline");
      if (!current) return;
      window.htmx.swap(current, event.data, { swapStyle: "outerHTML" });
      var fresh = document.getElementById("timeline");
      if (fresh) fresh.setAttribute("data-pushed", "true");
    });
    source.addEventListener("reload", function () {
      source.close();
      window.location.reload();
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", connect);
  } else {
    connect();
  }
})();
