// The visitor's opt-in to Web Push for the owner's replies. The widget lives on the blog's origin, where natter can
// register no service worker, so it opens this natter-origin page (`/notify/index.html#token=<visitor token>`) in a
// small window. The token travels in the fragment, which no server or log sees, and leaves the address bar at once.

import { subscribe } from "../shared/push-subscribe.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
if (location.hash) history.replaceState(null, "", location.pathname);

const enable = document.getElementById("enable");
const disable = document.getElementById("disable");
const status = document.getElementById("status");
const say = (text) => { status.textContent = text; };


async function call(method, body) {
  const res = await fetch("/push_subscriptions", {
    method,
    credentials: "omit",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ ...body, visitor_token: token }),
  });
  if (!res.ok) {
    let message = `HTTP ${res.status}`;
    try { message = (await res.json()).message || message; } catch (_) { /* keep the status */ }
    throw new Error(message);
  }
}

async function registration() {
  await navigator.serviceWorker.register("/notify/sw.js", { scope: "/notify/" });
  return navigator.serviceWorker.ready;
}

async function turnOn() {
  enable.disabled = true;
  try {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") throw new Error("Notifications are blocked for this site in your browser.");
    const keyResponse = await fetch("/push/key", { credentials: "omit" });
    if (!keyResponse.ok) throw new Error("This chat does not send notifications.");
    const sub = await subscribe(await registration(), (await keyResponse.json()).key);
    await call("POST", { subscription: sub.toJSON() });
    say("Done: you will get a notification when they answer. You can close this window.");
    disable.hidden = false;
    setTimeout(() => window.close(), 2500);
  } catch (error) {
    say(error.message || String(error));
    enable.disabled = false;
  }
}

async function turnOff() {
  disable.disabled = true;
  try {
    const reg = await registration();
    const sub = await reg.pushManager.getSubscription();
    if (sub) {
      await call("DELETE", { endpoint: sub.endpoint }).catch(() => {});
      await sub.unsubscribe();
    }
    say("Notifications are off.");
    disable.hidden = true;
    enable.disabled = false;
  } finally {
    disable.disabled = false;
  }
}

if (!UUID.test(token)) {
  say("Open this page from the chat on the site you were visiting.");
} else if (!("serviceWorker" in navigator && "PushManager" in window && "Notification" in window)) {
  say("This browser cannot show notifications from web pages. On an iPhone, add the site to your home screen first.");
} else {
  enable.disabled = false;
  enable.addEventListener("click", turnOn);
  disable.addEventListener("click", turnOff);
}
