// Web Push for the owner: permission, subscription with the server's VAPID key, and telling the server about it.

import { api } from "./api.js";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(base64url.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameKey(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  return x.length === b.length && x.every((v, i) => v === b[i]);
}

// "on" when this browser holds a subscription, "off" when it could have one, "denied" or "unsupported" otherwise.
export async function pushStatus(registration) {
  if (!pushSupported() || !registration) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  const sub = await registration.pushManager.getSubscription();
  return sub && Notification.permission === "granted" ? "on" : "off";
}

// Subscribes (again, if the server's key changed) and stores the subscription on the server. Calling it when already
// subscribed just re-registers, which heals a server whose data was reset.
export async function enablePush(registration) {
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("Notifications are blocked for this site.");
  const { key } = await api("/push/key");
  const applicationServerKey = keyBytes(key);
  let sub = await registration.pushManager.getSubscription();
  if (sub && !sameKey(sub.options && sub.options.applicationServerKey, applicationServerKey)) {
    await sub.unsubscribe();
    sub = null;
  }
  if (!sub) sub = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
  await api("/push_subscriptions", { method: "POST", body: sub.toJSON() });
  return sub;
}

export async function disablePush(registration) {
  const sub = await registration.pushManager.getSubscription();
  if (!sub) return;
  try {
    await api("/push_subscriptions", { method: "DELETE", body: { endpoint: sub.endpoint } });
  } finally {
    await sub.unsubscribe();
  }
}
