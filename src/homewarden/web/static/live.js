/* HomeWarden live view: fMP4 fragments over a WebSocket into Media Source Extensions, with
 * refreshed snapshots as the fallback. Hand-written, no libraries.
 *
 * Protocol (src/homewarden/web/live.py): a text message {"type": "init", "codec": "avc1...",
 * "camera": name} then a binary init segment (ftyp+moov); then one binary message per
 * fragment (moof+mdat, starting on a keyframe); the pair again at each new segment file;
 * {"type": "error", "detail": "..."} before the server closes the socket.
 *
 * Usage: <video data-testid="live-video" data-camera="front" muted autoplay playsinline>
 * is attached on DOMContentLoaded; or window.HomeWardenLive.attach(videoEl, "front").
 * The element's data-live-state says what it shows: connecting, live, snapshot, unsupported.
 */
(function () {
  "use strict";

  var SNAPSHOT_MS = 2000; // fallback refresh period
  var LAG_SLACK_S = 1.5; // behind the live edge by more than one fragment plus this: seek
  var KEEP_S = 30; // seconds of played video kept in the buffer
  var BACKOFF_FIRST_MS = 1000;
  var BACKOFF_MAX_MS = 30000;

  var MS = window.MediaSource || window.ManagedMediaSource;

  function socketUrl(camera) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + "/api/cameras/" +
      encodeURIComponent(camera) + "/live";
  }

  function snapshotUrl(camera) {
    return "/api/cameras/" + encodeURIComponent(camera) + "/latest.jpg?t=" + Date.now();
  }

  function attach(video, camera) {
    if (video.hwLive) return video.hwLive; // attached already (page script and auto-attach)
    var ws = null;
    var snapErrors = 0;
    var mediaSource = null;
    var objectUrl = null;
    var sourceBuffer = null;
    var codec = null;
    var queue = [];
    var fragmentS = 0; // duration of the newest fragment appended (s)
    var appendFrom = null; // buffered end before the append in progress
    var backoff = BACKOFF_FIRST_MS;
    var retryTimer = null;
    var snapTimer = null;
    var img = null;
    var stopped = false;
    var liveCapable = typeof window.WebSocket === "function" && !!MS;

    function setState(state) {
      video.setAttribute("data-live-state", state);
      if (img) img.setAttribute("data-live-state", state);
    }

    // -- snapshot fallback -----------------------------------------------------------------

    function refreshSnapshot() {
      if (!img || stopped) return;
      var next = snapshotUrl(camera);
      var loader = new Image();
      function again() {
        snapTimer = window.setTimeout(refreshSnapshot, SNAPSHOT_MS);
      }
      loader.onload = function () {
        snapErrors = 0;
        if (img) img.src = next;
        again();
      };
      loader.onerror = function () {
        snapErrors += 1;
        if (snapErrors < 3) return again();
        // Three failures in a row: ask why (signed out, access withdrawn) instead of polling.
        window.fetch(snapshotUrl(camera), { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401) return toLogin();
          if (r.status === 403 || r.status === 404) return deny("you no longer have access to this camera");
          snapErrors = 0;
          again();
        }, again);
      };
      loader.src = next;
    }

    function showSnapshot(state) {
      setState(state);
      if (img || stopped) return;
      img = document.createElement("img");
      img.setAttribute("data-testid", "live-snapshot");
      img.setAttribute("data-camera", camera);
      img.setAttribute("data-live-state", state);
      img.className = video.className;
      img.alt = "Latest picture of camera " + camera;
      if (video.parentNode) video.parentNode.replaceChild(img, video);
      img.src = snapshotUrl(camera);
      snapTimer = window.setTimeout(refreshSnapshot, SNAPSHOT_MS);
    }

    function showVideo() {
      if (!img) return;
      window.clearTimeout(snapTimer);
      snapTimer = null;
      if (img.parentNode) img.parentNode.replaceChild(video, img);
      img = null;
    }

    // -- media source ----------------------------------------------------------------------

    function resetMedia() {
      queue = [];
      appendFrom = null;
      sourceBuffer = null;
      codec = null;
      if (objectUrl) {
        video.removeAttribute("src");
        video.load();
        URL.revokeObjectURL(objectUrl);
        objectUrl = null;
      }
      mediaSource = new MS();
      if (window.ManagedMediaSource && MS === window.ManagedMediaSource) {
        video.disableRemotePlayback = true; // required by ManagedMediaSource (Safari)
      }
      objectUrl = URL.createObjectURL(mediaSource);
      video.src = objectUrl;
    }

    function mimeOf(c) {
      return 'video/mp4; codecs="' + c + '"';
    }

    function onInit(newCodec) {
      var mime = mimeOf(newCodec);
      if (!MS.isTypeSupported(mime)) {
        liveCapable = false;
        fail("unsupported");
        return;
      }
      if (sourceBuffer && newCodec !== codec) {
        queue.push({ changeType: mime });
      }
      codec = newCodec;
      if (!sourceBuffer) {
        if (mediaSource.readyState === "open") {
          makeSourceBuffer(mime);
        } else {
          mediaSource.addEventListener("sourceopen", function () {
            makeSourceBuffer(mime);
          }, { once: true });
        }
      }
    }

    function makeSourceBuffer(mime) {
      if (sourceBuffer || stopped) return;
      try {
        sourceBuffer = mediaSource.addSourceBuffer(mime);
      } catch (e) {
        liveCapable = false;
        fail("unsupported");
        return;
      }
      // Each segment file's timestamps start at 0; 'sequence' lays them end to end.
      sourceBuffer.mode = "sequence";
      sourceBuffer.addEventListener("updateend", function () {
        if (appendFrom !== null) {
          var end = bufferedEnd();
          if (end > appendFrom) fragmentS = end - appendFrom;
          appendFrom = null;
        }
        keepLive();
        trim();
        pump();
      });
      sourceBuffer.addEventListener("error", function () {
        fail("error");
      });
      pump();
    }

    function pump() {
      if (!sourceBuffer || sourceBuffer.updating || !queue.length) return;
      var item = queue.shift();
      try {
        if (item.changeType) {
          if (typeof sourceBuffer.changeType === "function") {
            sourceBuffer.changeType(item.changeType);
          }
          pump();
          return;
        }
        appendFrom = bufferedEnd();
        sourceBuffer.appendBuffer(item);
      } catch (e) {
        if (e && e.name === "QuotaExceededError") {
          queue.unshift(item);
          trim(true);
        } else {
          fail("error");
        }
      }
    }

    function bufferedEnd() {
      var b = sourceBuffer ? sourceBuffer.buffered : null;
      return b && b.length ? b.end(b.length - 1) : 0;
    }

    function keepLive() {
      var b = sourceBuffer.buffered;
      if (!b.length) return;
      var start = b.start(b.length - 1);
      var end = b.end(b.length - 1);
      // A fragment is a whole GOP and lands only when complete, so being one fragment behind
      // the buffered end is the live edge; seeking to the very end would stall until the next.
      var target = Math.max(start, end - fragmentS);
      if (video.currentTime < start || end - video.currentTime > fragmentS + LAG_SLACK_S) {
        video.currentTime = target;
      }
      if (video.paused) {
        var played = video.play();
        if (played && played.catch) played.catch(function () {});
      }
      if (img) showVideo();
      setState("live");
      backoff = BACKOFF_FIRST_MS;
    }

    function trim(hard) {
      if (!sourceBuffer || sourceBuffer.updating) return;
      var b = sourceBuffer.buffered;
      if (!b.length) return;
      var keep = hard ? 2 : KEEP_S;
      var upTo = video.currentTime - keep;
      if (upTo > b.start(0) + 1) {
        try {
          sourceBuffer.remove(b.start(0), upTo);
        } catch (e) { /* the next updateend tries again */ }
      }
    }

    // -- socket ----------------------------------------------------------------------------

    function connect() {
      retryTimer = null;
      if (stopped) return;
      if (!liveCapable) {
        showSnapshot("unsupported");
        return;
      }
      setState(img ? "snapshot" : "connecting");
      resetMedia();
      try {
        ws = new WebSocket(socketUrl(camera));
      } catch (e) {
        fail("error");
        return;
      }
      ws.binaryType = "arraybuffer";
      ws.onmessage = function (ev) {
        if (typeof ev.data === "string") {
          var msg;
          try {
            msg = JSON.parse(ev.data);
          } catch (e) {
            return;
          }
          if (msg.type === "init" && msg.codec) {
            onInit(msg.codec);
          } else if (msg.type === "error") {
            video.setAttribute("data-live-detail", msg.detail || "");
          }
          return;
        }
        queue.push(ev.data);
        pump();
      };
      ws.onclose = function (ev) {
        ws = null;
        if (ev && ev.code === 4401) return toLogin();
        // 4423: signed in, keys locked; the login page would send a signed-in viewer back.
        if (ev && ev.code === 4423) {
          return deny("footage locked: sign out and sign in again with your password to unlock it");
        }
        if (ev && (ev.code === 4403 || ev.code === 4404)) return deny(ev.reason || "no access");
        fail("closed");
      };
    }

    function fail(why) {
      if (stopped) return;
      if (ws) {
        ws.onclose = null;
        ws.close();
        ws = null;
      }
      showSnapshot(why === "unsupported" ? "unsupported" : "snapshot");
      if (!liveCapable || retryTimer) return;
      retryTimer = window.setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }

    function toLogin() {
      close();
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    }

    function deny(why) {
      close();
      var el = img || video;
      el.setAttribute("data-live-state", "denied");
      el.setAttribute("data-live-detail", why);
      el.setAttribute("title", "Live view ended: " + why);
    }

    function close() {
      stopped = true;
      window.clearTimeout(retryTimer);
      window.clearTimeout(snapTimer);
      if (ws) {
        ws.onclose = null;
        ws.close();
      }
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    }

    video.muted = true; // autoplay policies allow muted video only
    connect();
    video.hwLive = { close: close };
    return video.hwLive;
  }

  function attachAll() {
    var videos = document.querySelectorAll("video[data-testid=live-video][data-camera]");
    for (var i = 0; i < videos.length; i++) {
      if (!videos[i].hasAttribute("data-live-state")) {
        attach(videos[i], videos[i].getAttribute("data-camera"));
      }
    }
  }

  window.HomeWardenLive = { attach: attach };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", attachAll);
  } else {
    attachAll();
  }
})();
