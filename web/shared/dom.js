// DOM helpers shared by the dashboard and the widget's panel. Every piece of data reaches the page through
// textContent or DOM nodes, never as markup.

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
