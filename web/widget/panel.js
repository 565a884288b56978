/* natter chat panel: loaded by widget.js on the visitor's first click, built inside the widget's shadow root.
 *
 * Delivery works like this: every message the visitor writes gets a client_id and goes to an outbox in
 * localStorage before it is sent. After each (re)connect the panel first asks the server for what it missed
 * (`sync` with the last id it has seen), then resends whatever is still in the outbox with the same client_id. The
 * server stores a client_id once, so a resend after a lost acknowledgement never doubles a message, and a message
 * written in a tunnel is not lost: it leaves the outbox only when the server's `message` with its client_id arrives.
 */
(() => {
  "use strict";

  const STRINGS = {
    en: {
      placeholder: "Write a message…", send: "Send", close: "Close chat", online: "Online", away: "Away",
      connecting: "Connecting…", reconnecting: "Reconnecting…", typing: "typing…", seen: "Seen", sending: "Sending…",
      failed: "Not sent", retry: "Retry", identify: "Add your name", edit: "Change", name: "Your name",
      email: "Email (optional)", save: "Save", cancel: "Cancel", hello: "Hi {name}", log: "Messages",
      hint: "Enter to send, Shift+Enter for a new line", powered: "Powered by natter", unavailable: "Chat unavailable",
    },
    de: {
      placeholder: "Nachricht schreiben…", send: "Senden", close: "Chat schließen", online: "Online",
      away: "Abwesend", connecting: "Verbinde…", reconnecting: "Verbindung wird wiederhergestellt…",
      typing: "schreibt…", seen: "Gelesen", sending: "Wird gesendet…", failed: "Nicht gesendet",
      retry: "Erneut senden", identify: "Namen angeben", edit: "Ändern", name: "Dein Name",
      email: "E-Mail (optional)", save: "Speichern", cancel: "Abbrechen", hello: "Hallo {name}", log: "Nachrichten",
      hint: "Enter zum Senden, Umschalt+Enter für eine neue Zeile", powered: "Mit natter",
      unavailable: "Chat nicht verfügbar",
    },
    fr: {
      placeholder: "Écrivez un message…", send: "Envoyer", close: "Fermer le chat", online: "En ligne",
      away: "Absent", connecting: "Connexion…", reconnecting: "Reconnexion…", typing: "écrit…", seen: "Vu",
      sending: "Envoi…", failed: "Non envoyé", retry: "Réessayer", identify: "Indiquer votre nom",
      edit: "Modifier", name: "Votre nom", email: "E-mail (facultatif)", save: "Enregistrer", cancel: "Annuler",
      hello: "Bonjour {name}", log: "Messages", hint: "Entrée pour envoyer, Maj+Entrée pour une nouvelle ligne",
      powered: "Propulsé par natter", unavailable: "Chat indisponible",
    },
    es: {
      placeholder: "Escribe un mensaje…", send: "Enviar", close: "Cerrar chat", online: "En línea",
      away: "Ausente", connecting: "Conectando…", reconnecting: "Reconectando…", typing: "escribiendo…",
      seen: "Visto", sending: "Enviando…", failed: "No enviado", retry: "Reintentar", identify: "Añade tu nombre",
      edit: "Cambiar", name: "Tu nombre", email: "Correo (opcional)", save: "Guardar", cancel: "Cancelar",
      hello: "Hola {name}", log: "Mensajes", hint: "Intro para enviar, Mayús+Intro para una nueva línea",
      powered: "Con natter", unavailable: "Chat no disponible",
    },
  };

  const KEY_TOKEN = "natter:token";
  const KEY_OUTBOX = "natter:outbox";
  const KEY_READ = "natter:read";
  const MAX_FIELD = 2048;
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  // localStorage can throw (blocked third-party storage, private modes); the chat then lives in memory only.
  const memory = new Map();
  const storage = {
    get(key) {
      try { return localStorage.getItem(key); } catch (_) { return memory.has(key) ? memory.get(key) : null; }
    },
    set(key, value) {
      try { localStorage.setItem(key, value); } catch (_) { memory.set(key, value); }
    },
    remove(key) {
      try { localStorage.removeItem(key); } catch (_) { memory.delete(key); }
    },
  };

  // Version 4 (random) for the visitor token, which is a secret; version 7 for a message's client_id: milliseconds
  // first, so the client ids natter indexes arrive in order and land together in its index. (crypto.randomUUID would
  // do for the token, but exists only in secure contexts; a blog on plain http still deserves a chat.)
  function uuid(version) {
    const b = crypto.getRandomValues(new Uint8Array(16));
    if (version === 7) for (let i = 5, t = Date.now(); i >= 0; i--, t = Math.floor(t / 256)) b[i] = t % 256;
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /* A small ActionCable client for one channel: welcome → subscribe → confirm, pings as a heartbeat, reconnect
   * with exponential backoff and jitter, and at once when the network comes back or the tab becomes visible (a
   * laptop waking up has a socket that looks open but is dead; ten seconds without a frame means dead). */
  function cable(url, channel, handlers) {
    const identifier = JSON.stringify({ channel });
    let ws = null;
    let ready = false;
    let attempts = 0;
    let timer = 0;
    let seen = 0;
    let stopped = false;

    const send = (frame) => {
      if (!ws || ws.readyState !== 1) return false;
      ws.send(JSON.stringify(frame));
      return true;
    };
    function drop() {
      const old = ws;
      ws = null;
      ready = false;
      if (old) {
        old.onclose = old.onmessage = old.onerror = null;
        try { old.close(); } catch (_) { /* already closed */ }
      }
    }
    function retry() {
      handlers.state("reconnecting");
      if (timer || stopped) return;
      const delay = Math.min(30000, 1000 * 2 ** attempts++) * (0.5 + Math.random() / 2);
      timer = setTimeout(open, delay);
    }
    function open() {
      clearTimeout(timer);
      timer = 0;
      drop();
      if (stopped) return;
      seen = Date.now();
      let sock;
      try {
        sock = ws = new WebSocket(url(), ["actioncable-v1-json"]);
      } catch (_) {
        ws = null;
        retry();
        return;
      }
      sock.onmessage = (event) => {
        if (sock !== ws) return;
        seen = Date.now();
        let frame;
        try { frame = JSON.parse(event.data); } catch (_) { return; }
        switch (frame.type) {
          case "welcome": send({ command: "subscribe", identifier }); break;
          case "ping": break;
          case "confirm_subscription":
            if (frame.identifier !== identifier) break;
            ready = true;
            attempts = 0;
            handlers.state("connected");
            handlers.connected();
            break;
          case "reject_subscription":
            stopped = true;
            drop();
            handlers.state("failed");
            break;
          case "disconnect":
            drop();
            if (frame.reconnect === false) {
              stopped = true;
              handlers.state("failed", frame.reason);
            } else retry();
            break;
          default:
            if (frame.identifier === identifier && frame.message) handlers.received(frame.message);
        }
      };
      sock.onclose = () => {
        if (sock !== ws) return;
        ws = null;
        ready = false;
        retry();
      };
    }
    setInterval(() => {
      if (ws && Date.now() - seen > 10000) {
        drop();
        retry();
      }
    }, 2000);
    const kick = () => {
      if (!ws && !stopped) {
        attempts = 0;
        open();
      }
    };
    addEventListener("online", kick);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      if (ws && Date.now() - seen > 6000) drop();
      kick();
    });
    open();
    return {
      perform(action, data) {
        return ready && send({ command: "message", identifier, data: JSON.stringify(Object.assign({}, data, { action })) });
      },
      restart() {
        stopped = false;
        attempts = 0;
        open();
      },
    };
  }

  // Text with http(s) links made clickable, built from DOM nodes so no markup in a message is ever interpreted.
  function richText(parent, text) {
    const re = /\bhttps?:\/\/[^\s<>"']+/gi;
    let last = 0;
    for (let m; (m = re.exec(text));) {
      let href = m[0].replace(/[.,!?;:'"]+$/, "");
      if (href.endsWith(")") && !href.includes("(")) href = href.slice(0, -1);
      let ok = false;
      try { ok = /^https?:$/.test(new URL(href).protocol); } catch (_) { ok = false; }
      if (!ok) continue;
      parent.append(text.slice(last, m.index));
      const a = document.createElement("a");
      a.href = href;
      a.textContent = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
      parent.append(a);
      last = m.index + href.length;
      re.lastIndex = last;
    }
    parent.append(text.slice(last));
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function icon(d) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "path")).setAttribute("d", d);
    return svg;
  }

  // Styles go into adoptedStyleSheets (a page's CSP does not govern those); if the stylesheet cannot be fetched
  // (no CORS, old browser) a <link> inside the shadow root does the same job.
  async function loadStyles(root, server) {
    const href = server + "/widget/panel.css";
    try {
      if (!root.adoptedStyleSheets || !("replace" in CSSStyleSheet.prototype)) throw new Error("no constructable sheets");
      const res = await fetch(href, { credentials: "omit" });
      if (!res.ok) throw new Error(String(res.status));
      const sheet = new CSSStyleSheet();
      await sheet.replace(await res.text());
      root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
    } catch (_) {
      await new Promise((resolve) => {
        const link = document.createElement("link");
        link.rel = "stylesheet";
        link.href = href;
        link.onload = link.onerror = resolve;
        root.prepend(link);
      });
    }
  }

  function createPanel(ctx) {
    const { cfg, root } = ctx;
    // The owner's language setting wins; otherwise the first of the browser's languages that we speak.
    const wanted = cfg.language && cfg.language !== "auto" ? [cfg.language] : navigator.languages || [navigator.language];
    const lang = wanted.map((l) => String(l || "").slice(0, 2).toLowerCase()).find((l) => STRINGS[l]) || "en";
    const t = STRINGS[lang];

    // ---- state ----
    const messages = new Map(); // id → message, every message the server has confirmed
    const rows = new Map(); // "m<id>" or "c<client_id>" → row element
    // The outbox lives in localStorage and every change re-reads it, so two tabs of the same blog never overwrite
    // each other's unsent messages; both may send an item, and the server stores a client_id once.
    const outbox = {
      list() {
        try {
          const items = JSON.parse(storage.get(KEY_OUTBOX) || "[]");
          return Array.isArray(items) ? items.filter((m) => m && UUID.test(m.client_id) && typeof m.content === "string") : [];
        } catch (_) {
          return [];
        }
      },
      write(items) {
        if (items.length) storage.set(KEY_OUTBOX, JSON.stringify(items));
        else storage.remove(KEY_OUTBOX);
      },
      add(item) {
        const items = this.list();
        if (!items.some((m) => m.client_id === item.client_id)) items.push(item);
        this.write(items);
      },
      remove(clientId) {
        const items = this.list();
        const item = items.find((m) => m.client_id === clientId);
        if (item) this.write(items.filter((m) => m !== item));
        return item;
      },
    };
    const failed = new Map(); // client_id → {item, reason}: the server refused it; only the visitor retries it
    // Every message with an id up to lastId has been seen: the `after` of the next sync. Only sync answers move it,
    // and live messages once the sync is done, so a live message during a catch-up cannot make it skip a gap.
    let lastId = 0;
    let synced = false; // true once the sync after the current connect has finished
    let adminOnline = false;
    let seenUpTo = 0; // the admin has read the visitor's messages up to this id
    let readSent = Number(storage.get(KEY_READ)) || 0; // the visitor has seen admin messages up to this id
    let conversation = null;
    let pendingIdentify = null;
    let connection = "connecting";
    let shown = false;

    // ---- DOM ----
    const panel = el("section", "panel");
    panel.hidden = true;
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-label", cfg.title || "Chat");
    panel.lang = lang;
    panel.dataset.side = cfg.position;
    panel.style.setProperty("--natter-color", cfg.color);
    panel.style.setProperty("--natter-fg", cfg.fg);

    const head = panel.appendChild(el("header", "head"));
    const who = head.appendChild(el("div", "who"));
    const title = who.appendChild(el("h2", "title", cfg.title || "Chat"));
    title.id = "natter-title";
    const status = who.appendChild(el("p", "status"));
    status.appendChild(el("span", "dot")).setAttribute("aria-hidden", "true");
    const statusText = status.appendChild(el("span", "status-text", t.connecting));
    const closeBtn = head.appendChild(el("button", "icon-btn close"));
    closeBtn.type = "button";
    closeBtn.setAttribute("aria-label", t.close);
    closeBtn.appendChild(icon("M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z"));

    const banner = panel.appendChild(el("div", "banner", t.reconnecting));
    banner.setAttribute("role", "status");
    banner.hidden = true;

    const log = panel.appendChild(el("div", "log"));
    log.setAttribute("role", "log");
    log.setAttribute("aria-live", "polite");
    log.setAttribute("aria-label", t.log);
    log.tabIndex = 0;
    const intro = log.appendChild(el("div", "intro"));
    if (cfg.greeting) intro.appendChild(el("p", "greeting", cfg.greeting));
    const awayNote = intro.appendChild(el("p", "away-note", cfg.away_message || ""));
    awayNote.hidden = true;
    const list = log.appendChild(el("div", "list"));

    const typing = panel.appendChild(el("div", "typing"));
    typing.hidden = true;
    typing.appendChild(el("span", "dots")).append(el("i"), el("i"), el("i"));
    typing.appendChild(el("span", "typing-text", t.typing));

    const form = panel.appendChild(el("form", "identify"));
    form.hidden = true;
    form.noValidate = false;
    const nameInput = form.appendChild(el("input"));
    nameInput.name = "name";
    nameInput.maxLength = 80;
    nameInput.required = true;
    nameInput.autocomplete = "name";
    nameInput.placeholder = t.name;
    nameInput.setAttribute("aria-label", t.name);
    const emailInput = form.appendChild(el("input"));
    emailInput.type = "email";
    emailInput.name = "email";
    emailInput.maxLength = 254;
    emailInput.autocomplete = "email";
    emailInput.placeholder = t.email;
    emailInput.setAttribute("aria-label", t.email);
    const formButtons = form.appendChild(el("div", "form-buttons"));
    const cancelBtn = formButtons.appendChild(el("button", "link-btn", t.cancel));
    cancelBtn.type = "button";
    formButtons.appendChild(el("button", "small-btn", t.save)).type = "submit";

    const compose = panel.appendChild(el("form", "compose"));
    const input = compose.appendChild(el("textarea"));
    input.rows = 1;
    input.maxLength = 4000;
    input.placeholder = t.placeholder;
    input.setAttribute("aria-label", t.placeholder);
    input.setAttribute("aria-describedby", "natter-hint");
    const sendBtn = compose.appendChild(el("button", "send"));
    sendBtn.type = "submit";
    sendBtn.setAttribute("aria-label", t.send);
    sendBtn.appendChild(icon("M3.4 20.4 21.9 12.5a.6.6 0 0 0 0-1L3.4 3.6a.6.6 0 0 0-.8.7L4.9 11 15 12 4.9 13l-2.3 6.7a.6.6 0 0 0 .8.7z"));
    const hint = compose.appendChild(el("span", "sr-only", t.hint));
    hint.id = "natter-hint";

    const foot = panel.appendChild(el("footer", "foot"));
    const whoBtn = foot.appendChild(el("button", "link-btn", t.identify));
    whoBtn.type = "button";
    // Web Push for the visitor, offered once the owner has replied. A service worker cannot be registered on the
    // blog's origin, so natter's own page subscribes in a small window; the token rides in the URL fragment, which
    // reaches no server and no log.
    const notifyLabels = { en: "Notify me of replies", de: "Bei Antwort benachrichtigen", fr: "Me prévenir des réponses", es: "Avisarme de las respuestas" };
    const notifyRow = panel.insertBefore(el("div", "notify-row"), foot);
    notifyRow.hidden = true;
    notifyRow.style.padding = "2px 16px 0";
    notifyRow.style.fontSize = "12px";
    notifyRow.style.background = "var(--bg)";
    const notifyBtn = notifyRow.appendChild(el("button", "link-btn", notifyLabels[lang] || notifyLabels.en));
    notifyBtn.type = "button";
    notifyBtn.addEventListener("click", () => {
      window.open(`${cfg.server}/notify/index.html#token=${encodeURIComponent(token())}`, "natter-notify", "popup,width=440,height=560,noopener");
    });
    foot.appendChild(el("span", "powered", t.powered));

    // ---- rendering ----
    const timeFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
    const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    const toBottom = () => { log.scrollTop = log.scrollHeight; };

    function buildRow(content, mine, when) {
      const row = el("div", "row " + (mine ? "me" : "them"));
      const bubble = row.appendChild(el("div", "msg"));
      richText(bubble, content);
      const meta = row.appendChild(el("div", "meta"));
      const time = meta.appendChild(el("time"));
      const date = new Date(when);
      if (!isNaN(date)) {
        time.dateTime = date.toISOString();
        time.textContent = timeFormat.format(date);
      }
      meta.appendChild(el("span", "state"));
      return row;
    }

    function setRowState(row, text, retryItem) {
      const state = row.querySelector(".state");
      state.textContent = text || "";
      row.classList.toggle("failed", !!retryItem);
      if (retryItem) {
        const again = state.appendChild(el("button", "link-btn retry", t.retry));
        again.type = "button";
        again.addEventListener("click", () => retrySend(retryItem.client_id));
      }
    }

    // Confirmed rows are ordered by id; rows still on their way come after all of them.
    function placeConfirmed(row, id) {
      let before = null;
      for (const child of list.children) {
        const childId = Number(child.dataset.id || Infinity);
        if (childId > id) { before = child; break; }
      }
      list.insertBefore(row, before);
    }

    function addMessage(message) {
      if (!message || typeof message.id !== "number" || messages.has(message.id)) return false;
      messages.set(message.id, message);
      const stick = nearBottom();
      const pending = message.client_id && rows.get("c" + message.client_id);
      const row = buildRow(message.content, message.sender === "visitor", message.created_at);
      row.dataset.id = String(message.id);
      if (pending) {
        pending.remove();
        rows.delete("c" + message.client_id);
      }
      rows.set("m" + message.id, row);
      placeConfirmed(row, message.id);
      if (message.client_id) {
        outbox.remove(message.client_id);
        failed.delete(message.client_id);
      }
      if (stick || message.sender === "visitor") toBottom();
      if (message.sender === "admin" && "serviceWorker" in navigator && "PushManager" in window) notifyRow.hidden = false;
      return true;
    }

    function addPending(item) {
      const row = buildRow(item.content, true, item.created_at);
      row.classList.add("pending");
      row.dataset.cid = item.client_id;
      rows.set("c" + item.client_id, row);
      list.appendChild(row);
      setRowState(row, t.sending);
      toBottom();
      return row;
    }

    function renderSeen() {
      let target = null;
      for (const [id, m] of messages) if (m.sender === "visitor" && id <= seenUpTo && (!target || id > target.id)) target = m;
      for (const row of list.querySelectorAll(".row.me:not(.pending)")) setRowState(row, "");
      if (target) {
        const row = rows.get("m" + target.id);
        if (row) setRowState(row, t.seen);
      }
    }

    function renderStatus() {
      panel.classList.toggle("is-online", connection === "connected" && adminOnline);
      let text = t.connecting;
      if (connection === "connected") text = adminOnline ? t.online : t.away;
      else if (connection === "failed") text = t.unavailable;
      statusText.textContent = text;
      awayNote.hidden = !(connection === "connected" && !adminOnline && cfg.away_message);
      banner.hidden = connection !== "reconnecting";
      for (const item of outbox.list()) {
        const row = rows.get("c" + item.client_id);
        if (row) row.classList.toggle("offline", connection !== "connected");
      }
    }

    function renderWho() {
      const name = conversation && conversation.visitor_name;
      whoBtn.textContent = name ? `${t.hello.replace("{name}", name)} · ${t.edit}` : t.identify;
    }

    let unread = 0;
    function countUnread() {
      unread = 0;
      for (const m of messages.values()) if (m.sender === "admin" && m.id > readSent) unread++;
      ctx.badge(shown ? 0 : unread);
    }

    // ---- talking to the server ----
    function token() {
      let value = storage.get(KEY_TOKEN);
      if (!value || !UUID.test(value)) {
        value = uuid(4);
        storage.set(KEY_TOKEN, value);
      }
      return value;
    }
    const socketUrl = () => cfg.server.replace(/^http/, "ws") + "/cable?token=" + encodeURIComponent(token());

    function flush() {
      if (!synced) return;
      for (const item of outbox.list()) conn.perform("speak", { content: item.content, client_id: item.client_id });
      if (pendingIdentify && conn.perform("identify", pendingIdentify)) pendingIdentify = null;
    }

    function markRead() {
      if (!shown || !synced || document.visibilityState !== "visible") return;
      let up = 0;
      for (const m of messages.values()) if (m.sender === "admin" && m.id > up) up = m.id;
      if (up > readSent) {
        if (conn.perform("read", { up_to: up })) {
          readSent = up;
          storage.set(KEY_READ, String(up));
        }
      }
      countUnread();
    }

    let typingHide = 0;
    function received(event) {
      switch (event.type) {
        case "history": {
          if ("conversation" in event) {
            conversation = event.conversation;
            renderWho();
          }
          if (typeof event.admin_online === "boolean") adminOnline = event.admin_online;
          for (const m of event.messages || []) {
            addMessage(m);
            if (m.id > lastId) lastId = m.id;
          }
          renderSeen();
          renderStatus();
          if (event.more) {
            conn.perform("sync", { after: lastId });
          } else {
            synced = true;
            flush();
            markRead();
            countUnread();
          }
          break;
        }
        case "message":
          // The first message creates the conversation: tell the server again where the visitor is, so the owner
          // sees the page even if the earlier `visit` came before there was a conversation to attach it to.
          if (!conversation && event.message && event.message.conversation_id) {
            conversation = { id: event.message.conversation_id, visitor_name: null, email: null };
            visit();
          }
          if (synced && event.message && event.message.id > lastId) lastId = event.message.id;
          if (addMessage(event.message) && event.message.sender === "admin") {
            typing.hidden = true;
            markRead();
            countUnread();
          }
          break;
        case "typing":
          typing.hidden = !event.typing;
          clearTimeout(typingHide);
          if (event.typing) typingHide = setTimeout(() => { typing.hidden = true; }, 8000);
          break;
        case "read":
          if (typeof event.up_to === "number" && event.up_to > seenUpTo) {
            seenUpTo = event.up_to;
            renderSeen();
          }
          break;
        case "status":
          adminOnline = !!event.admin_online;
          renderStatus();
          break;
        case "deleted":
          startAfresh();
          break;
        case "error":
          if (event.client_id) {
            const item = outbox.remove(event.client_id);
            if (item) failed.set(item.client_id, item);
            const row = rows.get("c" + event.client_id);
            if (row) setRowState(row, t.failed, item || { client_id: event.client_id });
            if (row) row.title = event.message || event.code || "";
          } else {
            console.warn("natter:", event.code, event.message);
          }
          break;
        default:
      }
    }

    function startAfresh() {
      for (const key of [KEY_TOKEN, KEY_OUTBOX, KEY_READ]) storage.remove(key);
      messages.clear();
      rows.clear();
      failed.clear();
      list.replaceChildren();
      lastId = 0;
      seenUpTo = 0;
      readSent = 0;
      conversation = null;
      synced = false;
      renderWho();
      countUnread();
      conn.restart();
    }

    function visit() {
      conn.perform("visit", {
        url: location.href.slice(0, MAX_FIELD),
        title: document.title.slice(0, MAX_FIELD),
        referrer: document.referrer.slice(0, MAX_FIELD),
      });
    }

    const conn = cable(socketUrl, "VisitorChannel", {
      state(next, reason) {
        if (next !== "connected") synced = false;
        if (next === "failed" && reason === "unauthorized" && !UUID.test(storage.get(KEY_TOKEN) || "")) {
          storage.remove(KEY_TOKEN);
          setTimeout(() => conn.restart(), 1000);
        }
        connection = next;
        renderStatus();
      },
      connected() {
        conn.perform("sync", lastId ? { after: lastId } : {});
        visit();
      },
      received,
    });

    // ---- user actions ----
    function send() {
      const content = input.value.trim();
      if (!content) return;
      const item = { client_id: uuid(7), content, created_at: new Date().toISOString() };
      outbox.add(item);
      addPending(item);
      renderStatus();
      input.value = "";
      grow();
      stopTyping();
      if (synced) conn.perform("speak", { content: item.content, client_id: item.client_id });
    }

    function retrySend(clientId) {
      const item = failed.get(clientId);
      if (!item) return;
      failed.delete(clientId);
      outbox.add(item);
      const row = rows.get("c" + clientId);
      if (row) setRowState(row, t.sending);
      renderStatus();
      if (synced) conn.perform("speak", { content: item.content, client_id: item.client_id });
    }

    let typingOn = false;
    let typingAt = 0;
    let typingIdle = 0;
    function stopTyping() {
      clearTimeout(typingIdle);
      if (typingOn) conn.perform("typing", { typing: false });
      typingOn = false;
    }
    function grow() {
      input.style.height = "auto";
      input.style.height = Math.min(input.scrollHeight, 140) + "px";
    }

    input.addEventListener("input", () => {
      grow();
      if (!input.value.trim()) return stopTyping();
      if (!typingOn || Date.now() - typingAt > 3000) {
        if (conn.perform("typing", { typing: true })) {
          typingOn = true;
          typingAt = Date.now();
        }
      }
      clearTimeout(typingIdle);
      typingIdle = setTimeout(stopTyping, 4000);
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      }
    });
    compose.addEventListener("submit", (e) => {
      e.preventDefault();
      send();
      input.focus();
    });

    whoBtn.addEventListener("click", () => {
      form.hidden = !form.hidden;
      if (!form.hidden) {
        nameInput.value = (conversation && conversation.visitor_name) || "";
        emailInput.value = (conversation && conversation.email) || "";
        nameInput.focus();
      }
    });
    cancelBtn.addEventListener("click", () => {
      form.hidden = true;
      whoBtn.focus();
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const name = nameInput.value.trim();
      if (!name) return;
      const data = { name };
      const email = emailInput.value.trim();
      if (email) data.email = email;
      conversation = Object.assign({}, conversation, { visitor_name: name, email: email || null });
      if (!(synced && conn.perform("identify", data))) pendingIdentify = data;
      renderWho();
      form.hidden = true;
      input.focus();
    });

    closeBtn.addEventListener("click", () => ctx.close());
    panel.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        ctx.close();
      }
    });
    document.addEventListener("visibilitychange", markRead);

    for (const item of outbox.list()) addPending(item);
    renderWho();
    renderStatus();

    const styled = loadStyles(root, cfg.server).then(() => ctx.wrap.before(panel));
    return styled.then(() => ({
      show(focus) {
        shown = true;
        panel.hidden = false;
        ctx.wrap.classList.add("open");
        requestAnimationFrame(() => panel.classList.add("shown"));
        toBottom();
        if (focus !== false) input.focus();
        markRead();
        countUnread();
      },
      hide() {
        shown = false;
        panel.classList.remove("shown");
        panel.hidden = true;
        stopTyping();
        countUnread();
      },
    }));
  }

  const hook = window[Symbol.for("natter.panel")];
  if (typeof hook === "function") hook(createPanel);
})();
