// The dashboard's service worker: the app shell for an offline start, and Web Push notifications.
//
// Shell files are served network-first (so a new natter binary's dashboard shows at once) with the cache as the
// fallback when offline. The API and the socket are never cached: stale conversations are worse than none.

const CACHE = "natter-admin-v1";
const SHELL = [
  "/admin/",
  "/admin/admin.css",
  "/admin/admin.js",
  "/admin/api.js",
  "/admin/conversation.js",
  "/admin/inbox.js",
  "/admin/list.js",
  "/admin/login.js",
  "/admin/notifications.js",
  "/admin/push.js",
  "/admin/render.js",
  "/admin/reply.js",
  "/admin/sound.js",
  "/admin/state.js",
  "/admin/thread.js",
  "/admin/time.js",
  "/admin/toast.js",
  "/admin/visitor.js",
  "/shared/cable.js",
  "/shared/dom.js",
  "/shared/icon-button.css",
  "/shared/outbox.js",
  "/shared/push-subscribe.js",
  "/shared/storage.js",
  "/shared/uuid.js",
  "/admin/icon.svg",
  "/admin/icon-maskable.svg",
  "/admin/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((url) => new Request(url, { cache: "reload" }))))
      .catch(() => { /* an incomplete shell still leaves the network path working */ })
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("natter-admin-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  // The shell includes web/shared/'s modules, which live outside /admin/.
  const ours = url.pathname.startsWith("/admin/") || SHELL.includes(url.pathname);
  if (url.origin !== self.location.origin || !ours) return;
  const key = request.mode === "navigate" ? "/admin/" : url.pathname;
  event.respondWith(
    fetch(request)
      .then((response) => {
        if (response.ok && (request.mode === "navigate" || SHELL.includes(url.pathname))) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(key, copy));
        }
        return response;
      })
      .catch(() => caches.match(key).then((hit) => hit || Response.error())),
  );
});

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (_) {
    data = { body: event.data ? event.data.text() : "" };
  }
  const conversation = data.conversation_id ? String(data.conversation_id) : "";
  const title = data.title || "New message";
  const options = {
    body: data.body || "",
    tag: data.tag || (conversation ? `conversation-${conversation}` : "natter"),
    renotify: true,
    icon: "/admin/icon.svg",
    badge: "/admin/icon.svg",
    data: { conversation_id: conversation, url: data.url || "" },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { conversation_id: conversation } = event.notification.data || {};
  const target = new URL(conversation ? `/admin/#c=${encodeURIComponent(conversation)}` : "/admin/", self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const open = windows.find((client) => new URL(client.url).pathname.startsWith("/admin/"));
    if (open) {
      // A message lets the page switch conversations without a reload; navigate() is the fallback.
      open.postMessage({ type: "open-conversation", conversation_id: conversation });
      try {
        await open.focus();
      } catch (_) { /* focus can be refused; the navigation below still happens */ }
      if (conversation && "navigate" in open && open.url !== target) {
        try { await open.navigate(target); } catch (_) { /* uncontrolled client: the message did the work */ }
      }
      return;
    }
    await self.clients.openWindow(target);
  })());
});
