// How the dashboard names and pictures a visitor and the page they are on. Data reaches the page as text only.

import { el } from "../shared/dom.js";

export function visitorName(summary) {
  return (summary && summary.visitor_name) || `Visitor ${String(summary && summary.id).slice(0, 6)}`;
}

// The page as "host — title" (or host and path): the title is the visitor's to choose, the host is where the page
// really is, so it always shows.
export function pageLabel(page) {
  if (!page || !page.url) return "";
  let url;
  try { url = new URL(page.url); } catch (_) { return page.url; }
  return page.title ? `${url.host} — ${page.title}` : url.host + url.pathname;
}

// The page's address when the dashboard may link to it: http(s) on one of the sites the widget is on (`sites`, from
// the session) or natter's own demo page. Anything else is shown as text only.
export function pageHref(page, sites) {
  if (!page || !page.url) return null;
  let url;
  try { url = new URL(page.url); } catch (_) { return null; }
  if (!/^https?:$/.test(url.protocol) || url.username || url.password) return null;
  return url.origin === location.origin || sites.includes(url.origin) ? url.href : null;
}

// A plain address (the server's rule: one @, a dotted domain, none of the characters that would add headers or
// recipients to a mailto: link) gets a mailto: link; anything else is shown as text only.
const PLAIN_ADDRESS = /^[^\s@?&%,;:"()[\]<>\\/]+@[^\s@?&%,;:"()[\]<>\\/.][^\s@?&%,;:"()[\]<>\\/]*\.[^\s@?&%,;:"()[\]<>\\/.]+$/u;
export function mailtoHref(email) {
  return typeof email === "string" && PLAIN_ADDRESS.test(email) ? `mailto:${email}` : null;
}

// Initials on a colour picked from the id, so each visitor keeps the same avatar.
export function avatar(summary) {
  const name = visitorName(summary);
  const node = el("span", "avatar", summary && summary.visitor_name ? initials(name) : "?");
  let hash = 0;
  for (const ch of String(summary && summary.id)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  node.style.setProperty("--hue", String(hash % 360));
  node.setAttribute("aria-hidden", "true");
  return node;
}

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return ((parts[0] || "?")[0] + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
}
