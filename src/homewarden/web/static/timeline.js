// The camera page's 24-hour timeline and playback.
//
// Reads the JSON API (recordings, gaps, events of the window in #camera-page's
// data-camera/data-since/data-until, UTC epoch seconds), draws recorded spans, gaps (.gap)
// and event marks, and plays a clip from the moment clicked or dragged to:
// /api/cameras/NAME/clip.mp4?start=T&end=T+600. The clip's real start comes from its
// X-Clip-Start header (read with a one-byte Range request first); the playback video keeps
// it in data-clip-start and its wall-clock position in data-position (epoch seconds).
"use strict";

(function () {
  var CLIP_SECONDS = 600;      // one clip per play; the API allows up to an hour
  var JOIN_SECONDS = 2;        // segments closer than this draw as one span
  var EVENT_PAGES = 10;        // at most this many pages of 500 events per window

  var page = document.getElementById("camera-page");
  if (!page) { return; }
  var camera = page.dataset.camera;
  var since = parseFloat(page.dataset.since);
  var until = parseFloat(page.dataset.until);
  var bar = page.querySelector("[data-testid=timeline]");
  var cursor = bar.querySelector(".cursor");
  var ticks = page.querySelector(".ticks");
  var video = page.querySelector("video[data-testid=playback]");
  var timeText = page.querySelector("[data-testid=playback-time]");
  var message = page.querySelector("[data-testid=timeline-message]");
  var speed = page.querySelector("select[data-testid=speed]");
  var download = page.querySelector("a[data-testid=download-clip]");
  var spans = [];
  var events = [];
  var clip = null;   // {start, end, requested}

  function q(params) {
    return Object.keys(params).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
  }
  function api(path, params) {
    return fetch(path + "?" + q(params), { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { return problem(r).then(function (p) { throw new Error(p); }); }
      return r.json();
    });
  }
  function problem(resp) {
    if (resp.status === 401) {
      // A live session whose household keys are not unlocked here (a restart, another web
      // node) answers keys-locked: reloading keeps the session, signing in again unlocks.
      return resp.json().then(function (p) {
        return /keys-locked$/.test(p.type || "")
          ? "footage locked: sign out and sign in again with your password to unlock it"
          : "signed out: reload the page to sign in again";
      }, function () { return "signed out: reload the page to sign in again"; });
    }
    return resp.json().then(function (p) { return p.detail || resp.statusText; },
                            function () { return resp.statusText || ("error " + resp.status); });
  }
  function say(text) { message.textContent = text || ""; }
  function pct(t) { return (Math.min(Math.max(t, since), until) - since) / (until - since) * 100; }
  function local(t) { return new Date(t * 1000).toLocaleString(); }
  function clipUrl(start, end) {
    return "/api/cameras/" + encodeURIComponent(camera) + "/clip.mp4?" +
      q({ start: start.toFixed(3), end: end.toFixed(3) });
  }

  function block(cls, start, end) {
    var el = document.createElement("div");
    el.className = cls;
    el.style.left = pct(start) + "%";
    el.style.width = Math.max(pct(end) - pct(start), 0.15) + "%";
    el.dataset.start = start.toFixed(3);
    el.dataset.end = end.toFixed(3);
    bar.insertBefore(el, cursor);
    return el;
  }

  function drawTicks() {
    var first = new Date(since * 1000);
    first.setMinutes(0, 0, 0);
    var t = first.getTime() / 1000 + 3600;
    for (; t < until; t += 3600) {
      var d = new Date(t * 1000);
      if (d.getHours() % 3 !== 0) { continue; }
      var s = document.createElement("span");
      s.style.left = pct(t) + "%";
      s.textContent = d.getHours().toString().padStart(2, "0") + ":00";
      ticks.appendChild(s);
    }
  }

  function joinSegments(segments) {
    var out = [];
    segments.sort(function (a, b) { return a.start - b.start; });
    segments.forEach(function (s) {
      var last = out[out.length - 1];
      if (last && s.start - last.end <= JOIN_SECONDS) { last.end = Math.max(last.end, s.end); }
      else { out.push({ start: s.start, end: s.end }); }
    });
    return out;
  }

  function loadEvents(cursorValue, pagesLeft) {
    var params = { camera: camera, since: since, until: until, limit: 500 };
    if (cursorValue) { params.cursor = cursorValue; }
    return api("/api/events", params).then(function (pageData) {
      events = events.concat(pageData.events);
      if (pageData.next_cursor && pagesLeft > 1) { return loadEvents(pageData.next_cursor, pagesLeft - 1); }
      return null;
    });
  }

  function draw() {
    spans.forEach(function (s) { block("span", s.start, s.end); });
    events.sort(function (a, b) { return a.start - b.start; });
    events.forEach(function (ev) {
      var mark = document.createElement("button");
      mark.type = "button";
      mark.className = "mark";
      mark.setAttribute("data-testid", "event-mark");
      mark.dataset.start = ev.start.toFixed(3);
      mark.dataset.eventId = String(ev.id);
      mark.style.left = pct(ev.start) + "%";
      mark.title = ev.label + " " + local(ev.start);
      mark.setAttribute("aria-label", ev.label + " event at " + local(ev.start));
      mark.addEventListener("pointerdown", function (e) { e.stopPropagation(); });
      mark.addEventListener("click", function (e) { e.stopPropagation(); play(ev.start); });
      bar.appendChild(mark);
    });
    if (!spans.length) {
      say("no footage in this span");
    } else {
      var last = spans[spans.length - 1];
      setDownload(Math.max(last.start, last.end - CLIP_SECONDS), last.end);
    }
  }

  function setDownload(start, end) {
    download.href = clipUrl(start, end);
    download.setAttribute("download", camera + "-" + new Date(start * 1000).toISOString()
      .replace(/[:]/g, "-").replace(/\.\d+Z$/, "Z") + ".mp4");
    download.setAttribute("aria-disabled", "false");
  }

  function spanFrom(t) {
    for (var i = 0; i < spans.length; i++) {
      if (spans[i].end > t) { return spans[i]; }
    }
    return null;
  }

  function showPosition(t) {
    video.dataset.position = t.toFixed(3);
    timeText.textContent = local(t);
    cursor.hidden = false;
    cursor.style.left = pct(t) + "%";
    bar.setAttribute("aria-valuenow", Math.round(t));
  }

  function play(t) {
    var s = spanFrom(t);
    if (!s || s.start >= until) { say("no footage in this span"); return; }
    var start = Math.max(t, s.start);
    var end = start + CLIP_SECONDS;
    var url = clipUrl(start, end);
    say("");
    fetch(url, { headers: { Range: "bytes=0-0" }, credentials: "same-origin" }).then(function (r) {
      if (!r.ok) {
        return problem(r).then(function (p) {
          say(r.status === 404 ? "no footage in this span" : p);
        });
      }
      var clipStart = parseFloat(r.headers.get("X-Clip-Start"));
      var clipEnd = parseFloat(r.headers.get("X-Clip-End"));
      if (isNaN(clipStart)) { clipStart = start; }
      clip = { start: clipStart, end: isNaN(clipEnd) ? end : clipEnd, requested: start };
      video.dataset.clipStart = clipStart.toFixed(3);
      video.dataset.clipEnd = clip.end.toFixed(3);
      setDownload(start, end);
      showPosition(Math.max(start, clipStart));
      video.src = url;
      video.addEventListener("loadedmetadata", function seek() {
        video.removeEventListener("loadedmetadata", seek);
        var offset = Math.max(0, start - clipStart);
        if (offset > 0.05) { video.currentTime = offset; }
        applySpeed();
        var playing = video.play();
        if (playing && playing.catch) { playing.catch(function () { /* autoplay refused */ }); }
      });
      return null;
    }).catch(function (err) { say(String(err.message || err)); });
  }

  function applySpeed() {
    var rate = parseFloat(speed.value) || 1;
    video.defaultPlaybackRate = rate;
    video.playbackRate = rate;
  }

  function position() {
    var p = parseFloat(video.dataset.position);
    return isNaN(p) ? until : p;
  }

  function jump(direction) {
    var pos = position();
    var found = null;
    if (direction > 0) {
      for (var i = 0; i < events.length; i++) {
        if (events[i].start > pos + 0.5) { found = events[i]; break; }
      }
    } else {
      for (var j = events.length - 1; j >= 0; j--) {
        if (events[j].start < pos - 2) { found = events[j]; break; }
      }
    }
    if (!found) { say(direction > 0 ? "no later event in this span" : "no earlier event in this span"); return; }
    play(found.start);
  }

  function timeAt(clientX) {
    var rect = bar.getBoundingClientRect();
    var f = Math.min(Math.max((clientX - rect.left) / rect.width, 0), 1);
    return since + f * (until - since);
  }

  var dragging = false;
  bar.addEventListener("pointerdown", function (e) {
    dragging = true;
    bar.setPointerCapture(e.pointerId);
    showPosition(timeAt(e.clientX));
  });
  bar.addEventListener("pointermove", function (e) {
    if (dragging) { showPosition(timeAt(e.clientX)); }
  });
  bar.addEventListener("pointerup", function (e) {
    if (!dragging) { return; }
    dragging = false;
    play(timeAt(e.clientX));
  });
  bar.addEventListener("pointercancel", function () { dragging = false; });
  bar.addEventListener("keydown", function (e) {
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      play(position() + (e.key === "ArrowLeft" ? -60 : 60));
    }
  });

  video.addEventListener("timeupdate", function () {
    if (clip) { showPosition(clip.start + video.currentTime); }
  });
  video.addEventListener("ended", function () {
    // Go on with the next clip while footage follows.
    if (clip && clip.end > clip.requested + 1 && clip.end < until - 1 && spanFrom(clip.end)) {
      play(clip.end);
    }
  });
  speed.addEventListener("change", applySpeed);
  page.querySelector("[data-testid=prev-event]").addEventListener("click", function () { jump(-1); });
  page.querySelector("[data-testid=next-event]").addEventListener("click", function () { jump(1); });

  drawTicks();
  var range = { camera: camera, since: since, until: until };
  Promise.all([
    api("/api/recordings", range).then(function (segs) { spans = joinSegments(segs); }),
    api("/api/gaps", range).then(function (gaps) {
      gaps.forEach(function (g) { block("gap", g.start, g.end === null ? until : g.end); });
    }),
    loadEvents(null, EVENT_PAGES)
  ]).then(draw).catch(function (err) { say(String(err.message || err)); });
})();
