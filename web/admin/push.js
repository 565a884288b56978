// Web Push for the owner: permission, subscription with the server's VAPID key, and telling the server about it.

import { api } from "./api.js";
import { subscribe } from "../shared/push-subscribe.js";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
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
  const sub = await subscribe(registration, key);
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
