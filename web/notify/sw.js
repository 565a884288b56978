// The visitor's notification worker (scope /notify/): shows the owner's reply and, on click, goes back to the page
// where the visitor chatted, whose widget shows the whole conversation. The payload is
// {"title", "body", "conversation_id", "tag", "url"}, the same shape as the dashboard's.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (_) {
    data = { body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(self.registration.showNotification(data.title || "New reply", {
    body: data.body || "",
    tag: data.tag || "natter-reply",
    renotify: true,
    data: { url: data.url || "" },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  let target = self.location.origin + "/";
  try {
    const url = new URL((event.notification.data || {}).url || "", self.location.origin);
    if (url.protocol === "https:" || url.protocol === "http:") target = url.href;
  } catch (_) { /* keep natter's own page */ }
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const open = windows.find((client) => client.url === target);
    if (open) return open.focus();
    return self.clients.openWindow(target);
  })());
});
