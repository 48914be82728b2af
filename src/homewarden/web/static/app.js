// HomeWarden pages: times in the browser's zone, live views attached.
// No inline scripts (CSP); pages pass data in data-* attributes.
"use strict";

(function () {
  function localTimes(root) {
    root.querySelectorAll("time[data-epoch]").forEach(function (el) {
      var t = new Date(parseFloat(el.dataset.epoch) * 1000);
      if (!isNaN(t.getTime())) {
        el.textContent = t.toLocaleString();
        el.title = el.getAttribute("datetime") || "";
      }
    });
  }

  function attachLive() {
    var live = window.HomeWardenLive;
    if (!live || typeof live.attach !== "function") { return; }
    document.querySelectorAll("video[data-testid=live-video]").forEach(function (video) {
      live.attach(video, video.dataset.camera);
    });
  }

  window.HomeWarden = { localTimes: localTimes };
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    attachLive();
  });
})();
