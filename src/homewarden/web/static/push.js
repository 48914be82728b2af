// The notifications settings page: turn Web Push on or off on this device, send a test.
// Talks to /api/push/* with the session's CSRF token from <meta name="csrf-token">.
"use strict";

(function () {
  const status = document.getElementById("push-status");
  const enable = document.getElementById("push-enable");
  const disable = document.getElementById("push-disable");
  const test = document.getElementById("push-test");
  if (!status || !enable || !disable || !test) return;
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : "";

  function say(text) {
    status.textContent = text;
  }

  function show(subscribed) {
    enable.hidden = subscribed;
    disable.hidden = !subscribed;
    test.hidden = !subscribed;
  }

  // base64url (the VAPID key) to the bytes pushManager.subscribe wants.
  function keyBytes(b64url) {
    const b64 = (b64url + "=".repeat((4 - (b64url.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(b64);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function sameKey(a, b) {
    if (!a || a.byteLength !== b.byteLength) return false;
    const x = new Uint8Array(a);
    for (let i = 0; i < x.length; i++) if (x[i] !== b[i]) return false;
    return true;
  }

  async function api(method, path, body) {
    const resp = await fetch(path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!resp.ok) {
      let detail = resp.statusText;
      try {
        detail = (await resp.json()).detail || detail;
      } catch (e) {
        /* not JSON */
      }
      throw new Error(detail);
    }
    return resp.status === 204 ? null : resp.json();
  }

  async function serverKey() {
    return keyBytes((await api("GET", "/api/push/vapid-public-key")).public_key);
  }

  async function registration() {
    await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    return navigator.serviceWorker.ready;
  }

  async function turnOn() {
    enable.disabled = true;
    try {
      const permission = await Notification.requestPermission();
      if (permission !== "granted") {
        say("Notifications are blocked for this site; allow them in the browser's site settings.");
        return;
      }
      const reg = await registration();
      const key = await serverKey();
      let sub = await reg.pushManager.getSubscription();
      if (sub && !sameKey(sub.options.applicationServerKey, key)) {
        await sub.unsubscribe(); // made for another recorder key
        sub = null;
      }
      if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
      await api("POST", "/api/push/subscriptions", sub.toJSON());
      say("Notifications are on for this device.");
      show(true);
    } catch (e) {
      say("Could not turn notifications on: " + e.message);
    } finally {
      enable.disabled = false;
    }
  }

  async function turnOff() {
    disable.disabled = true;
    try {
      const reg = await registration();
      const sub = await reg.pushManager.getSubscription();
      if (sub) {
        try {
          await api("DELETE", "/api/push/subscriptions", { endpoint: sub.endpoint });
        } catch (e) {
          /* already forgotten by the recorder */
        }
        await sub.unsubscribe();
      }
      say("Notifications are off for this device.");
      show(false);
    } catch (e) {
      say("Could not turn notifications off: " + e.message);
    } finally {
      disable.disabled = false;
    }
  }

  async function sendTest() {
    test.disabled = true;
    try {
      const r = await api("POST", "/api/push/test");
      say(r.delivered ? "Test sent: it should appear in a moment." : "The test could not be delivered (" + r.failed + " failed, " + r.gone + " gone).");
    } catch (e) {
      say("Could not send a test: " + e.message);
    } finally {
      test.disabled = false;
    }
  }

  async function init() {
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      say("This browser cannot receive notifications. On an iPhone, add HomeWarden to the home screen first.");
      return;
    }
    if (!window.isSecureContext) {
      say("Notifications need HTTPS (or localhost).");
      return;
    }
    enable.addEventListener("click", turnOn);
    disable.addEventListener("click", turnOff);
    test.addEventListener("click", sendTest);
    try {
      const reg = await registration();
      const sub = await reg.pushManager.getSubscription();
      if (sub && Notification.permission === "granted") {
        // Keep the recorder's copy current (keys may have been refreshed by the browser).
        await api("POST", "/api/push/subscriptions", sub.toJSON());
        say("Notifications are on for this device.");
        show(true);
      } else {
        say(Notification.permission === "denied" ? "Notifications are blocked for this site." : "Notifications are off for this device.");
        show(false);
      }
    } catch (e) {
      say("Notifications are unavailable: " + e.message);
      show(false);
    }
  }

  init();
})();
