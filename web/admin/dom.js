// Small DOM helpers. Every piece of data reaches the page through textContent or DOM nodes, never as markup.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// Text with http(s) links made clickable.
export function richText(parent, text) {
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  for (let m; (m = re.exec(text));) {
    let href = m[0].replace(/[.,!?;:'"]+$/, "");
    if (href.endsWith(")") && !href.includes("(")) href = href.slice(0, -1);
    let ok = false;
    try { ok = /^https?:$/.test(new URL(href).protocol); } catch (_) { ok = false; }
    if (!ok) continue;
    parent.append(text.slice(last, m.index));
    const a = el("a", null, href);
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    parent.append(a);
    last = m.index + href.length;
    re.lastIndex = last;
  }
  parent.append(text.slice(last));
}

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

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const dateFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function shortTime(iso) {
  const date = new Date(iso);
  if (isNaN(date)) return "";
  const age = Date.now() - date.getTime();
  if (age < 60000) return "now";
  if (age < 3600000) return `${Math.floor(age / 60000)}m`;
  if (new Date().toDateString() === date.toDateString()) return timeFormat.format(date);
  if (age < 6 * 86400000) return dayFormat.format(date);
  return dateFormat.format(date);
}

export function clockTime(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : timeFormat.format(date);
}

export function fullTime(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : fullFormat.format(date);
}
