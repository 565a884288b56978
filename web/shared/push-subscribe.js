// A Web Push subscription for natter's VAPID key, shared by the dashboard (web/admin/push.js) and the visitor's
// opt-in page (web/notify/notify.js).

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(base64url.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameKey(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  return x.length === b.length && x.every((v, i) => v === b[i]);
}

// The registration's subscription for `key` (base64url, from GET /push/key). One made for another key is dropped
// first: the push service would refuse natter's pushes to it.
export async function subscribe(registration, key) {
  const applicationServerKey = keyBytes(key);
  let sub = await registration.pushManager.getSubscription();
  if (sub && !sameKey(sub.options && sub.options.applicationServerKey, applicationServerKey)) {
    await sub.unsubscribe();
    sub = null;
  }
  return sub || registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
}
