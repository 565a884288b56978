/* natter widget loader.
 *
 * This file is what a blog pays for on every page view, so it stays small and does almost nothing: after the page
 * has loaded it draws one button inside a Shadow DOM (the page's CSS cannot reach in, ours cannot leak out). It
 * creates no cookie, no storage and no socket, and fetches nothing more, until the visitor clicks. The first click
 * loads /widget/panel.js, which builds the chat inside the same shadow root.
 *
 * The server replaces the config placeholder below with a JSON object; data-* attributes on the script tag win.
 */
(() => {
  "use strict";
  const script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  const CONFIG = __NATTER_CONFIG__;
  const HOOK = Symbol.for("natter.panel");
  // One widget per page, even if the tag was pasted twice.
  if (window[Symbol.for("natter")]) return;
  window[Symbol.for("natter")] = true;

  const cfg = Object.assign({}, CONFIG);
  const data = (script && script.dataset) || {};
  for (const key of ["server", "color", "position", "title", "greeting", "away_message", "language"]) {
    const value = data[key.replace(/_(\w)/g, (_, c) => c.toUpperCase())];
    if (value) cfg[key] = value;
  }
  if (!cfg.server) cfg.server = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  cfg.server = String(cfg.server).replace(/\/+$/, "");
  if (!window.CSS || !CSS.supports("color", cfg.color || "")) cfg.color = "#2563eb";
  cfg.position = cfg.position === "left" ? "left" : "right";

  const codes = ["en", "de", "fr", "es"];
  const wanted = cfg.language && cfg.language !== "auto" ? [cfg.language] : navigator.languages || [navigator.language];
  cfg.lang = wanted.map((l) => String(l || "").slice(0, 2).toLowerCase()).find((l) => codes.includes(l)) || "en";
  const LABELS = {
    en: ["Open chat", "Close chat", "unread"],
    de: ["Chat öffnen", "Chat schließen", "ungelesen"],
    fr: ["Ouvrir le chat", "Fermer le chat", "non lus"],
    es: ["Abrir chat", "Cerrar chat", "sin leer"],
  }[cfg.lang];

  // Text on the bubble: white, unless the owner picked a light colour.
  const hex = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(cfg.color);
  let fg = "#fff";
  if (hex) {
    const h = hex[1].length === 3 ? hex[1].replace(/./g, "$&$&") : hex[1];
    const [r, g, b] = [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
    if (0.299 * r + 0.587 * g + 0.114 * b > 170) fg = "#111827";
  }
  cfg.fg = fg;

  const CSS_TEXT = `
.wrap{all:initial;position:relative;display:block;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;--natter-color:${cfg.color};--natter-fg:${fg}}
.bubble{all:initial;box-sizing:border-box;position:relative;display:grid;place-items:center;width:58px;height:58px;border-radius:50%;background:var(--natter-color);color:var(--natter-fg);cursor:pointer;box-shadow:0 6px 20px rgba(15,23,42,.22),0 2px 6px rgba(15,23,42,.14);transition:transform .18s ease,box-shadow .18s ease}
.bubble:hover{transform:translateY(-2px);box-shadow:0 10px 26px rgba(15,23,42,.26),0 3px 8px rgba(15,23,42,.16)}
.bubble:focus-visible{outline:3px solid var(--natter-color);outline-offset:3px}
.bubble svg{width:28px;height:28px;fill:currentColor;pointer-events:none}
.badge{all:initial;position:absolute;top:-3px;right:-3px;box-sizing:border-box;min-width:21px;height:21px;padding:0 6px;border-radius:11px;background:#dc2626;color:#fff;font:700 12px/21px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;text-align:center;box-shadow:0 0 0 2px #fff}
.badge[hidden]{display:none}
@media (prefers-reduced-motion:reduce){.bubble{transition:none}.bubble:hover{transform:none}}
`;
  const ICON_CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8.8L4 21.6V18a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z";
  const ICON_CLOSE = "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z";

  function start() {
    const host = document.createElement("natter-chat");
    // Inline !important beats anything the page says about our host (think `* { all: unset }`). Set through the
    // CSSOM, which a page's style-src CSP allows, unlike a style attribute.
    const place = { position: "fixed", bottom: "20px", top: "auto", [cfg.position]: "20px",
      [cfg.position === "left" ? "right" : "left"]: "auto", "z-index": "2147483000", display: "block",
      margin: "0", padding: "0", border: "0", width: "auto", height: "auto", transform: "none", filter: "none",
      visibility: "visible", opacity: "1", contain: "none" };
    for (const p in place) host.style.setProperty(p, place[p], "important");
    const root = host.attachShadow({ mode: "closed" });
    if (root.adoptedStyleSheets && window.CSSStyleSheet && "replaceSync" in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS_TEXT);
      root.adoptedStyleSheets = [sheet];
    } else {
      root.appendChild(document.createElement("style")).textContent = CSS_TEXT;
    }

    const wrap = root.appendChild(document.createElement("div"));
    wrap.className = "wrap";
    wrap.dataset.side = cfg.position;
    const bubble = wrap.appendChild(document.createElement("button"));
    bubble.className = "bubble";
    bubble.type = "button";
    bubble.setAttribute("aria-haspopup", "dialog");
    const svg = bubble.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "svg"));
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = svg.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "path"));
    const badge = bubble.appendChild(document.createElement("span"));
    badge.className = "badge";
    badge.setAttribute("aria-hidden", "true");

    let open = false;
    let unread = 0;
    let panel = null;
    const label = () => {
      bubble.setAttribute("aria-expanded", String(open));
      bubble.setAttribute("aria-label", (open ? LABELS[1] : LABELS[0]) + (unread ? ` (${unread} ${LABELS[2]})` : ""));
      path.setAttribute("d", open ? ICON_CLOSE : ICON_CHAT);
      badge.textContent = unread > 99 ? "99+" : String(unread);
      badge.hidden = !unread || open;
      wrap.classList.toggle("open", open);
    };

    const ctx = {
      root, wrap, bubble, cfg,
      badge(n) { unread = n; label(); },
      close() { setOpen(false); },
      isOpen: () => open,
    };

    // The panel script registers itself through a well-known symbol rather than a global name, so that nothing
    // visible is added to the page's window. A classic script (not import()) needs no CORS from the server.
    function loadPanel() {
      if (!panel) {
        panel = new Promise((resolve, reject) => {
          window[HOOK] = (factory) => { delete window[HOOK]; resolve(factory(ctx)); };
          const s = document.createElement("script");
          s.src = cfg.server + "/widget/panel.js";
          s.async = true;
          s.onerror = () => { panel = null; reject(new Error("natter: the chat could not be loaded")); };
          document.head.appendChild(s);
        });
      }
      return panel;
    }

    // `focus` is false when the panel is reopened after a page navigation: it must not steal the page's focus.
    function setOpen(next, focus = true) {
      if (next === open) return;
      open = next;
      label();
      try { sessionStorage.setItem("natter:open", open ? "1" : "0"); } catch (_) { /* storage may be blocked */ }
      if (open) {
        loadPanel().then((p) => { if (open) p.show(focus); }, (e) => { open = false; label(); console.warn(e.message); });
      } else {
        if (panel) panel.then((p) => p.hide());
        if (focus) bubble.focus();
      }
    }

    bubble.addEventListener("click", () => setOpen(!open));
    label();
    document.body.appendChild(host);

    // Someone who has chatted before gets the panel in the background, so a reply shows as a badge on every page.
    // A first-time visitor has no token, so this creates nothing.
    let known = false;
    let wasOpen = false;
    try {
      known = !!localStorage.getItem("natter:token");
      wasOpen = sessionStorage.getItem("natter:open") === "1";
    } catch (_) { /* storage may be blocked: then only a click loads the panel */ }
    if (known && wasOpen) setOpen(true, false);
    else if (known) loadPanel().catch(() => {});
  }

  if (document.readyState === "complete") start();
  else window.addEventListener("load", start, { once: true });
})();
