// How the dashboard names and pictures a visitor and the page they are on. Data reaches the page as text only.

import { el } from "../shared/dom.js";

export function visitorName(summary) {
  return (summary && summary.visitor_name) || `Visitor ${String(summary && summary.id).slice(0, 6)}`;
}

export function pageLabel(page) {
  if (!page || !page.url) return "";
  if (page.title) return page.title;
  try {
    const url = new URL(page.url);
    return url.host + url.pathname;
  } catch (_) {
    return page.url;
  }
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
