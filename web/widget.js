/* natter widget loader: after load it draws a button in a Shadow DOM, and nothing more (no cookie, storage, socket
 * or fetch) until the first click loads /widget/panel.js. The server inlines its config; data-* attributes win. */
(() => {
  "use strict";
  const script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  const CONFIG = __NATTER_CONFIG__;
  const HOOK = Symbol.for("natter.panel");
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

  // White on the bubble unless the colour is light.
  let h = (/^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(cfg.color) || [])[1] || "000";
  if (h.length < 6) h = h.replace(/./g, "$&$&");
  const fg = (cfg.fg = 299 * parseInt(h.slice(0, 2), 16) + 587 * parseInt(h.slice(2, 4), 16) + 114 * parseInt(h.slice(4), 16) > 170000 ? "#111827" : "#fff");

  const CSS_TEXT = `.wrap{all:initial;position:relative;display:block;--natter-color:${cfg.color};--natter-fg:${fg}}.bubble{all:initial;box-sizing:border-box;position:relative;display:grid;place-items:center;width:58px;height:58px;border-radius:50%;background:var(--natter-color);color:var(--natter-fg);cursor:pointer;box-shadow:0 6px 20px rgba(15,23,42,.22),0 2px 6px rgba(15,23,42,.14);transition:transform .18s}.bubble:hover{transform:translateY(-2px)}.bubble:focus-visible{outline:3px solid var(--natter-color);outline-offset:3px}.bubble svg{width:28px;height:28px;fill:currentColor;pointer-events:none}.badge{all:initial;position:absolute;top:-3px;right:-3px;box-sizing:border-box;min-width:21px;height:21px;padding:0 6px;border-radius:11px;background:#dc2626;color:#fff;font:700 12px/21px system-ui,sans-serif;text-align:center;box-shadow:0 0 0 2px #fff}.badge[hidden]{display:none}@media (prefers-reduced-motion:reduce){.bubble{transition:none;transform:none!important}}`;
  const ICON_CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8.8L4 21.6V18a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z";
  const ICON_CLOSE = "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z";

  function start() {
    const host = document.createElement("natter-chat");
    // Inline !important beats the page's CSS (`* { all: unset }`); set via CSSOM, which a style-src CSP allows.
    const place = { position: "fixed", bottom: "20px", top: "auto", [cfg.position]: "20px",
      [cfg.position === "left" ? "right" : "left"]: "auto", "z-index": "2147483000", display: "block",
      margin: "0", padding: "0", border: "0", transform: "none" };
    for (const p in place) host.style.setProperty(p, place[p], "important");
    const root = host.attachShadow({ mode: "open" });
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
    const NS = "http://www.w3.org/2000/svg";
    const svg = bubble.appendChild(document.createElementNS(NS, "svg"));
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = svg.appendChild(document.createElementNS(NS, "path"));
    const badge = bubble.appendChild(document.createElement("span"));
    badge.className = "badge";
    badge.setAttribute("aria-hidden", "true");

    let open = false;
    let unread = 0;
    let panel = null;
    const label = () => {
      bubble.setAttribute("aria-expanded", String(open));
      // The name stays put (the owner's title, in their language); aria-expanded tells open from closed.
      bubble.setAttribute("aria-label", (cfg.title || "Chat") + (unread ? ` (${unread})` : ""));
      path.setAttribute("d", open ? ICON_CLOSE : ICON_CHAT);
      badge.textContent = unread > 99 ? "99+" : String(unread);
      badge.hidden = !unread || open;
      wrap.classList.toggle("open", open);
    };

    const ctx = {
      root, wrap, bubble, cfg,
      badge(n) { unread = n; label(); },
      close() { setOpen(false); },
    };

    // panel.js is a classic script (no CORS needed) and hands itself over through a symbol, not a global name.
    function loadPanel() {
      if (!panel) {
        panel = new Promise((resolve, reject) => {
          window[HOOK] = (factory) => { delete window[HOOK]; resolve(factory(ctx)); };
          const s = document.createElement("script");
          s.src = cfg.server + "/widget/panel.js";
          s.async = true;
          s.onerror = () => { panel = null; reject(new Error("natter: chat failed to load")); };
          document.head.appendChild(s);
        });
      }
      return panel;
    }

    // No focus stealing when the panel reopens by itself after a navigation.
    function setOpen(next, focus = true) {
      if (next === open) return;
      open = next;
      label();
      try { sessionStorage.setItem("natter:open", open ? "1" : "0"); } catch (_) { /* blocked storage */ }
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

    // A link from a reply email (`#natter-continue=CODE`, a fragment, so no server saw it): natter trades the code for a
    // token of that conversation, which becomes this browser's, and the chat opens on it.
    const code = (/[#&]natter-continue=([\w-]+)/.exec(location.hash) || [])[1];
    if (code) {
      history.replaceState(null, "", location.href.split("#")[0]);
      // A plain-text body keeps it a simple request: no preflight.
      fetch(cfg.server + "/email/continue", { method: "POST", credentials: "omit", body: code })
        .then((res) => (res.ok ? res.json() : Promise.reject(new Error("natter: this link from an email has expired"))))
        .then((answer) => { localStorage.setItem("natter:token", answer.token); setOpen(true); })
        .catch((e) => console.warn(e.message));
      return;
    }
    // A returning chatter (token present) gets the panel in the background, so replies badge the bubble.
    let known = false;
    let wasOpen = false;
    try {
      known = !!localStorage.getItem("natter:token");
      wasOpen = sessionStorage.getItem("natter:open") === "1";
    } catch (_) { /* blocked storage */ }
    if (known && wasOpen) setOpen(true, false);
    else if (known) loadPanel().catch(() => {});
  }

  if (document.readyState === "complete") start();
  else window.addEventListener("load", start, { once: true });
})();
