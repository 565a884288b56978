// Web Push on this device (the notify button) and the service worker that shows the notifications.

import { api } from "./api.js";
import { disablePush, enablePush, pushStatus, pushSupported } from "./push.js";
import { $, state } from "./state.js";
import { toast } from "./toast.js";

let registration = null;

export async function setupPush() {
  const button = $("notify");
  if (!pushSupported() || !registration) {
    button.hidden = true;
    return;
  }
  try {
    await api("/push/key");
  } catch (_) {
    button.hidden = true; // this server has no push configured
    return;
  }
  const status = await pushStatus(registration);
  button.hidden = false;
  button.disabled = status === "denied";
  button.textContent = status === "on" ? "Disable notifications" : status === "denied" ? "Notifications blocked" : "Enable notifications";
  button.dataset.status = status;
  // Re-registering an existing subscription heals a server whose data was reset.
  if (status === "on") enablePush(registration).catch(() => {});
}

$("notify").addEventListener("click", async () => {
  const button = $("notify");
  button.disabled = true;
  try {
    if (button.dataset.status === "on") {
      await disablePush(registration);
      toast("Notifications are off on this device.");
    } else {
      await enablePush(registration);
      toast("Notifications are on. You'll hear about new messages even when this tab is closed.");
    }
  } catch (e) {
    toast(e.message || "Couldn't change notifications.");
  }
  button.disabled = false;
  setupPush();
});

export async function registerWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("/admin/sw.js", { scope: "/admin/" });
    registration = await navigator.serviceWorker.ready;
    if (state.started) setupPush();
  } catch (_) { /* no worker (e.g. plain http on a LAN address): the dashboard works without one */ }
  navigator.serviceWorker.addEventListener("message", (event) => {
    const data = event.data || {};
    if (data.type === "open-conversation" && data.conversation_id) location.hash = `c=${encodeURIComponent(data.conversation_id)}`;
  });
}
