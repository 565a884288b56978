/* natter chat panel: loaded by widget.js on the visitor's first click, built inside the widget's shadow root.
 *
 * Delivery works like this: every message the visitor writes gets a client_id and goes to an outbox in
 * localStorage before it is sent. After each (re)connect the panel first asks the server for what it missed
 * (`sync` with the last id it has seen), then resends whatever is still in the outbox with the same client_id. The
 * server stores a client_id once, so a resend after a lost acknowledgement never doubles a message, and a message
 * written in a tunnel is not lost: it leaves the outbox only when the server's `message` with its client_id arrives.
 */

import { connectCable } from "../../shared/cable.js";
import { createOutbox } from "../../shared/outbox.js";
import { storage } from "../../shared/storage.js";
import { UUID, uuid } from "../../shared/uuid.js";
import { messageRow, placeConfirmed, setRowState } from "./rows.js";
import { language, STRINGS } from "./strings.js";
import { loadStyles } from "./styles.js";
import { buildPanel } from "./view.js";

const KEY_TOKEN = "natter:token";
const KEY_OUTBOX = "natter:outbox";
const KEY_READ = "natter:read";
const MAX_FIELD = 2048;

function createPanel(ctx) {
  const { cfg, root } = ctx;
  const lang = language(cfg);
  const t = STRINGS[lang];

  // ---- state ----
  const messages = new Map(); // id → message, every message the server has confirmed
  const rows = new Map(); // "m<id>" or "c<client_id>" → row element
  // The outbox lives in localStorage (see shared/outbox.js): two tabs of the same blog never lose each other's
  // unsent messages.
  const outbox = createOutbox(KEY_OUTBOX, (m) => UUID.test(m.client_id) && typeof m.content === "string");
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
  let everConnected = false; // once a socket was accepted, the origin is allowed: failures are the network's
  let shown = false;

  const {
    panel, statusText, closeBtn, banner, log, awayNote, emailOffer, list, typing, form, nameInput, emailInput,
    cancelBtn, compose, input, whoBtn, notifyRow, notifyBtn,
  } = buildPanel(cfg, lang, t);

  // ---- rendering ----
  // "5:58 PM" or "17:58" as the language writes it: a 12-hour clock has no leading zero.
  const timeFormat = new Intl.DateTimeFormat(lang, { hour: "numeric", minute: "2-digit" });
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const toBottom = () => { log.scrollTop = log.scrollHeight; };

  // A row the server refused gets a button that sends it again.
  const setFailed = (row, clientId) => setRowState(row, t.failed, { label: t.retry, onClick: () => retrySend(clientId) });

  function addMessage(message) {
    if (!message || typeof message.id !== "number" || messages.has(message.id)) return false;
    messages.set(message.id, message);
    const stick = nearBottom();
    const pending = message.client_id && rows.get("c" + message.client_id);
    const row = messageRow(message.content, message.sender === "visitor", message.created_at, timeFormat);
    row.dataset.id = String(message.id);
    if (pending) {
      pending.remove();
      rows.delete("c" + message.client_id);
    }
    rows.set("m" + message.id, row);
    placeConfirmed(list, row, message.id);
    if (message.client_id) {
      outbox.remove((m) => m.client_id === message.client_id);
      failed.delete(message.client_id);
    }
    if (stick || message.sender === "visitor") toBottom();
    if (message.sender === "admin" && "serviceWorker" in navigator && "PushManager" in window) notifyRow.hidden = false;
    return true;
  }

  function addPending(item) {
    const row = messageRow(item.content, true, item.created_at, timeFormat);
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
    else if (connection === "failed" || connection === "not-set-up") text = t.unavailable;
    statusText.textContent = text;
    awayNote.hidden = !(connection === "connected" && !adminOnline && cfg.away_message);
    emailOffer.hidden = !(cfg.email && connection === "connected" && !adminOnline && !(conversation && conversation.email));
    banner.textContent = connection === "not-set-up" ? t.notSetUp : t.reconnecting;
    banner.hidden = connection !== "reconnecting" && connection !== "not-set-up";
    panel.classList.toggle("not-set-up", connection === "not-set-up");
    input.disabled = connection === "not-set-up";
    for (const item of outbox.list()) {
      const row = rows.get("c" + item.client_id);
      if (row) row.classList.toggle("offline", connection !== "connected");
      if (row && connection === "not-set-up") setRowState(row, t.failed);
    }
  }

  // A socket refused for the page's origin fails like a network error (the browser hides the 403), so after the
  // first failed connect the panel asks the server whether this page may open the chat at all; if not, it stops
  // retrying and says so, instead of "Reconnecting…" forever. Asked once per page; a failed question is asked again.
  let originChecked = false;
  function checkOrigin() {
    if (originChecked) return;
    originChecked = true;
    fetch(cfg.server + "/widget/allowed", { credentials: "omit", cache: "no-store" })
      .then((res) => res.json())
      .then((answer) => {
        if (answer && answer.allowed === false) {
          conn.close();
          connection = "not-set-up";
          renderStatus();
        }
      })
      .catch(() => { originChecked = false; });
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
          const [item] = outbox.remove((m) => m.client_id === event.client_id);
          if (item) failed.set(item.client_id, item);
          const row = rows.get("c" + event.client_id);
          if (row) setFailed(row, event.client_id);
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

  const conn = connectCable({
    url: socketUrl,
    channel: "VisitorChannel",
    onState(next, reason) {
      if (connection === "not-set-up") return;
      if (next !== "connected") synced = false;
      if (next === "reconnecting" && !everConnected) checkOrigin();
      if (next === "connected") everConnected = true;
      if (next === "failed" && reason === "unauthorized" && !UUID.test(storage.get(KEY_TOKEN) || "")) {
        storage.remove(KEY_TOKEN);
        setTimeout(() => conn.restart(), 1000);
      }
      connection = next;
      renderStatus();
    },
    onConnected() {
      conn.perform("sync", lastId ? { after: lastId } : {});
      visit();
    },
    onReceived: received,
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

  function openForm(focusEmail) {
    form.hidden = false;
    nameInput.value = (conversation && conversation.visitor_name) || "";
    emailInput.value = (conversation && conversation.email) || "";
    (focusEmail && nameInput.value ? emailInput : nameInput).focus();
  }
  whoBtn.addEventListener("click", () => {
    if (form.hidden) openForm(false);
    else form.hidden = true;
  });
  emailOffer.addEventListener("click", () => openForm(true));
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
    renderStatus();
    form.hidden = true;
    input.focus();
  });

  notifyBtn.addEventListener("click", () => {
    window.open(`${cfg.server}/notify/index.html#token=${encodeURIComponent(token())}`, "natter-notify", "popup,width=440,height=560,noopener");
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

  // The panel reopened by itself after a reload takes no focus (that would scroll and steal the page's), but the
  // first Tab from the top of the page goes to the composer: otherwise it lands on whatever comes first, and Enter
  // there can close the chat the visitor was about to use.
  function tabIntoPanel() {
    const onKey = (e) => {
      document.removeEventListener("keydown", onKey, true);
      const nothingFocused = !document.activeElement || document.activeElement === document.body;
      if (e.key === "Tab" && !e.shiftKey && nothingFocused && shown && !input.disabled) {
        e.preventDefault();
        input.focus();
      }
    };
    document.addEventListener("keydown", onKey, true);
  }

  const styled = loadStyles(root, cfg.server).then(() => ctx.wrap.before(panel));
  return styled.then(() => ({
    show(focus) {
      shown = true;
      panel.hidden = false;
      ctx.wrap.classList.add("open");
      requestAnimationFrame(() => panel.classList.add("shown"));
      toBottom();
      if (focus !== false) input.focus();
      else tabIntoPanel();
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

// widget.js waits for the panel under this symbol (see loadPanel there).
const hook = window[Symbol.for("natter.panel")];
if (typeof hook === "function") hook(createPanel);
