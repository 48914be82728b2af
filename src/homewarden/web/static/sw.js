// HomeWarden service worker: shows Web Push notifications of new events and opens the event
// when one is clicked. Served from /sw.js so that its scope is the whole site.
//
// A push message carries links, never footage (see homewarden.services.push). The snapshot
// is fetched here, from this recorder, with the user's own session cookie: the recorder
// checks the user's access at that moment and records the view in its audit log. Without a
// session (signed out) the notification shows no picture.
"use strict";

const ICON = "/icons/icon-192.png";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// A same-origin path from the message, else "/" (never another site).
function localPath(value, fallback) {
  try {
    const url = new URL(value || fallback, self.location.origin);
    return url.origin === self.location.origin ? url.pathname + url.search : fallback;
  } catch (e) {
    return fallback;
  }
}

// The snapshot as a data: URL (a service worker has no object URLs), or null.
async function snapshot(path) {
  try {
    const resp = await fetch(localPath(path, ""), { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) return null;
    const type = resp.headers.get("content-type") || "image/jpeg";
    if (!type.startsWith("image/")) return null;
    const bytes = new Uint8Array(await resp.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return "data:" + type + ";base64," + btoa(binary);
  } catch (e) {
    return null;
  }
}

async function show(event) {
  let data = {};
  if (event.data) {
    try {
      data = event.data.json();
    } catch (e) {
      data = { body: event.data.text() };
    }
  }
  const options = {
    body: data.body || "",
    icon: ICON,
    badge: ICON,
    tag: data.event_id ? "event-" + data.event_id : "homewarden",
    data: { url: localPath(data.url, "/"), clip: data.clip ? localPath(data.clip, "") : "" },
  };
  if (typeof data.start === "number") options.timestamp = Math.round(data.start * 1000);
  if (options.data.clip) options.actions = [{ action: "clip", title: "Play clip" }];
  if (data.snapshot) {
    const image = await snapshot(data.snapshot);
    if (image) options.image = image;
  }
  return self.registration.showNotification(data.title || "HomeWarden", options);
}

self.addEventListener("push", (event) => event.waitUntil(show(event)));

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const d = event.notification.data || {};
  const path = event.action === "clip" && d.clip ? d.clip : d.url || "/";
  const target = new URL(path, self.location.origin).href;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const w of windows) {
        if (w.url === target && "focus" in w) return w.focus();
      }
      return self.clients.openWindow(target);
    })()
  );
});
