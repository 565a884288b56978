// Version 4 (random) for the visitor token, which is a secret; version 7 for a message's client_id: milliseconds
// first, so the client ids natter indexes arrive in order and land together in its index. (crypto.randomUUID would
// do for the token, but exists only in secure contexts; a blog on plain http still deserves a chat.)
export function uuid(version) {
  const b = crypto.getRandomValues(new Uint8Array(16));
  if (version === 7) for (let i = 5, t = Date.now(); i >= 0; i--, t = Math.floor(t / 256)) b[i] = t % 256;
  b[6] = (b[6] & 0x0f) | (version << 4);
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
