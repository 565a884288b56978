// natter dashboard: login, the live conversation list and the open conversation.
//
// How it stays true after sleep or network loss: every message has an id from one counter across the store. The
// dashboard keeps `cursor`, the highest id up to which it has seen *every* message, and after each (re)connect it
// reloads the conversation summaries over HTTP and then asks the socket for everything after the cursor (`sync`,
// repeated while the server says `more`). Live messages that arrive before that catch-up has finished are shown,
// but do not move the cursor, so nothing between the cursor and them can be skipped. Replies go through an outbox
// in localStorage with a client_id and are resent after every catch-up until their `message` comes back; the server
// stores each client_id once, so a resend never doubles a reply.

import { api } from "./api.js";
import { connectCable } from "../shared/cable.js";
import { el } from "../shared/dom.js";
import { createOutbox } from "../shared/outbox.js";
import { uuid } from "../shared/uuid.js";
import { avatar, pageLabel, visitorName } from "./visitor.js";
import { ConversationList } from "./list.js";
import { disablePush, enablePush, pushStatus, pushSupported } from "./push.js";
import { chime, unlockSound } from "./sound.js";
import { ThreadView } from "./thread.js";

const $ = (id) => document.getElementById(id);
const OUTBOX_KEY = "natter:admin-outbox";
const APP_TITLE = "natter";

const state = {
  conversations: new Map(), // id → summary, as the server last described it plus live updates
  threads: new Map(), // id → { messages: Map(id → message), more, loaded, seenUpTo, readSent }
  cursor: 0, // every message with id ≤ cursor has been seen (see the top of this file)
  synced: false, // the catch-up after the current connect has finished
  selected: null, // the open conversation's id
  typing: new Map(), // conversation id → timer that clears the visitor's typing flag
  failed: new Map(), // client_id → reply the server refused; only a click retries it
};
let cable = null;
let registration = null;
let started = false;

const list = new ConversationList($("conversations"), (id) => { location.hash = `c=${encodeURIComponent(id)}`; });
const view = new ThreadView({
  list: $("message-list"),
  scroller: $("messages"),
  older: $("older"),
});

// Replies not yet confirmed by the server (see shared/outbox.js).
const outbox = createOutbox(OUTBOX_KEY, (i) => i.client_id && i.conversation_id && typeof i.content === "string");

function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

// ---------------------------------------------------------------- login

function show(which) {
  $("boot").hidden = which !== "boot";
  $("login").hidden = which !== "login";
  $("app").hidden = which !== "app";
}

function showLogin(message) {
  show("login");
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  ($("username").value ? $("password") : $("username")).focus();
}

function waitText(seconds) {
  if (seconds >= 120) return `${Math.ceil(seconds / 60)} minutes`;
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}

let loginLock = 0;
$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (loginLock) return;
  const username = $("username").value.trim();
  const password = $("password").value;
  const error = $("login-error");
  if (!username || !password) {
    error.textContent = "Enter your username and password.";
    error.hidden = false;
    return;
  }
  const submit = $("login-submit");
  submit.disabled = true;
  try {
    await api("/auth/login", { method: "POST", body: { username, password } });
    $("password").value = "";
    error.hidden = true;
    startApp();
  } catch (e) {
    error.hidden = false;
    if (e.status === 401) {
      error.textContent = "Wrong username or password.";
      $("password").select();
    } else if (e.status === 429) {
      let left = e.retryAfter || 30;
      error.textContent = `Too many attempts. Try again in ${waitText(left)}.`;
      loginLock = setInterval(() => {
        left -= 1;
        if (left <= 0) {
          clearInterval(loginLock);
          loginLock = 0;
          submit.disabled = false;
          error.textContent = "You can try again now.";
        } else {
          error.textContent = `Too many attempts. Try again in ${waitText(left)}.`;
        }
      }, 1000);
      return;
    } else {
      error.textContent = e.status ? e.message : "Can't reach natter. Check your connection.";
    }
  } finally {
    if (!loginLock) submit.disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("/auth/logout", { method: "POST", body: {} });
  } catch (_) { /* the session is gone either way from this page's point of view */ }
  stopApp();
  showLogin();
});

// ---------------------------------------------------------------- the live app

function startApp() {
  show("app");
  if (started) return;
  started = true;
  state.synced = false;
  cable = connectCable({
    url: () => location.origin.replace(/^http/, "ws") + "/cable",
    channel: "AdminChannel",
    onState: connectionState,
    onConnected: catchUp,
    onReceived: received,
  });
  refreshConversations().catch(() => {});
  openFromHash();
  setupPush();
}

function stopApp() {
  started = false;
  if (cable) cable.close();
  cable = null;
  state.conversations.clear();
  state.threads.clear();
  state.cursor = 0;
  state.synced = false;
  state.selected = null;
  list.render([], null, new Set());
  closeThread();
  updateTitle();
}

function connectionState(next, reason) {
  if (next !== "connected") state.synced = false;
  const live = next === "connected";
  const badge = $("connection");
  badge.textContent = live ? "Live" : "Reconnecting…";
  badge.classList.toggle("offline", !live);
  $("banner").hidden = live;
  for (const item of outbox.list()) {
    if (item.conversation_id === state.selected) view.setPendingState(item.client_id, live ? "Sending…" : "Waiting for connection…");
  }
  if (next === "failed" && (reason === "rejected" || reason === "unauthorized")) {
    api("/auth/session").then(
      () => { stopApp(); startApp(); },
      () => { stopApp(); showLogin("Your session has ended. Please sign in again."); },
    );
  }
}

async function catchUp() {
  state.synced = false;
  try {
    await refreshConversations();
  } catch (e) {
    if (e.status === 401) {
      stopApp();
      showLogin("Your session has ended. Please sign in again.");
      return;
    }
  }
  if (cable && cable.ready) cable.perform("sync", { after: state.cursor });
}

async function refreshConversations() {
  const { conversations } = await api("/conversations");
  const fresh = new Map();
  for (const summary of conversations || []) fresh.set(summary.id, summary);
  for (const id of state.threads.keys()) if (!fresh.has(id)) state.threads.delete(id);
  // Summaries only tell where the conversations stand; the cursor starts from them once, on the first load, and
  // after that only the socket's catch-up moves it.
  if (!state.cursor) {
    for (const summary of fresh.values()) {
      if (summary.last_message && summary.last_message.id > state.cursor) state.cursor = summary.last_message.id;
    }
  }
  // A live message may have come in while the request was on its way; keep whichever is newer.
  for (const [id, old] of state.conversations) {
    const next = fresh.get(id);
    if (next && old.last_message && (!next.last_message || old.last_message.id > next.last_message.id)) {
      next.last_message = old.last_message;
      next.updated_at = old.updated_at;
    }
  }
  state.conversations = fresh;
  if (state.selected && !fresh.has(state.selected) && !state.threads.has(state.selected)) {
    toast("That conversation no longer exists.");
    location.hash = "";
  }
  render();
}

let refreshTimer = 0;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refreshConversations().catch(() => {}), 300);
}

function received(event) {
  switch (event.type) {
    case "sync": {
      for (const summary of event.conversations || []) upsert(summary);
      let fresh = false;
      for (const message of event.messages || []) {
        if (ingest(message, false)) fresh = true;
        if (message.id > state.cursor) state.cursor = message.id;
      }
      if (fresh) notifyNew();
      if (event.more) {
        cable.perform("sync", { after: state.cursor });
      } else {
        state.synced = true;
        flushOutbox();
        markRead();
      }
      render();
      break;
    }
    case "message": {
      const message = Object.assign({ conversation_id: event.conversation_id }, event.message);
      if (ingest(message, true)) notifyNew();
      if (state.synced && message.id > state.cursor) state.cursor = message.id;
      markRead();
      render();
      break;
    }
    case "conversation":
      if (event.conversation) upsert(event.conversation);
      render();
      break;
    case "typing":
      setTyping(event.conversation_id, !!event.typing);
      break;
    case "read": {
      const thread = state.threads.get(event.conversation_id);
      if (thread && event.up_to > thread.seenUpTo) {
        thread.seenUpTo = event.up_to;
        if (state.selected === event.conversation_id) view.setSeen(thread.seenUpTo);
      }
      break;
    }
    case "presence": {
      const summary = state.conversations.get(event.conversation_id);
      if (summary) {
        summary.online = !!event.online;
        if (event.page) summary.page = event.page;
        render();
      }
      break;
    }
    case "deleted":
      forget(event.conversation_id);
      break;
    case "error":
      if (event.client_id) refused(event.client_id, event.message || event.code);
      else toast(event.message || event.code || "Something went wrong.");
      break;
    default:
  }
}

function upsert(summary) {
  const old = state.conversations.get(summary.id);
  if (old && old.last_message && (!summary.last_message || old.last_message.id > summary.last_message.id)) {
    summary = Object.assign({}, summary, { last_message: old.last_message, updated_at: old.updated_at });
  }
  state.conversations.set(summary.id, summary);
}

// Records a message everywhere it shows. Returns true for a visitor message the dashboard had not seen before.
function ingest(message, live) {
  const id = message.conversation_id;
  let summary = state.conversations.get(id);
  if (!summary) {
    summary = { id, visitor_name: null, email: null, unread_count: 0, last_message: null, created_at: message.created_at, updated_at: message.created_at, online: message.sender === "visitor", page: null };
    state.conversations.set(id, summary);
    refreshSoon();
  }
  const thread = state.threads.get(id);
  let known = false;
  if (thread) {
    known = thread.messages.has(message.id);
    thread.messages.set(message.id, message);
  }
  const newer = !summary.last_message || message.id > summary.last_message.id;
  if (newer) {
    summary.last_message = message;
    if (!summary.updated_at || message.created_at > summary.updated_at) summary.updated_at = message.created_at;
    if (live && message.sender === "visitor" && !watching(id)) summary.unread_count = (summary.unread_count || 0) + 1;
  }
  if (message.client_id) {
    outbox.remove((item) => item.client_id === message.client_id);
    state.failed.delete(message.client_id);
  }
  if (message.sender === "visitor") setTyping(id, false);
  if (state.selected === id) view.add([message]);
  return message.sender === "visitor" && newer && !known;
}

function watching(id) {
  return state.selected === id && document.visibilityState === "visible";
}

function notifyNew() {
  chime();
}

function forget(id) {
  state.conversations.delete(id);
  state.threads.delete(id);
  outbox.remove((item) => item.conversation_id === id);
  if (state.selected === id) {
    toast("The conversation was deleted.");
    location.hash = "";
  }
  render();
}

function refused(clientId, reason) {
  const [item] = outbox.remove((i) => i.client_id === clientId);
  if (item) state.failed.set(clientId, item);
  view.setPendingState(clientId, `Not sent${reason ? `: ${reason}` : ""}`, () => retry(clientId));
}

function retry(clientId) {
  const item = state.failed.get(clientId);
  if (!item) return;
  state.failed.delete(clientId);
  outbox.add(item);
  view.setPendingState(clientId, "Sending…");
  if (state.synced) cable.perform("reply", { conversation_id: item.conversation_id, content: item.content, client_id: item.client_id });
}

function flushOutbox() {
  if (!state.synced) return;
  for (const item of outbox.list()) {
    cable.perform("reply", { conversation_id: item.conversation_id, content: item.content, client_id: item.client_id });
  }
}

function markRead() {
  const id = state.selected;
  if (!id || !state.synced || !cable || document.visibilityState !== "visible") return;
  const thread = state.threads.get(id);
  const summary = state.conversations.get(id);
  if (!thread || !thread.loaded) return;
  let up = 0;
  for (const messageId of thread.messages.keys()) if (messageId > up) up = messageId;
  if (!up) return;
  if (up > thread.readSent || (summary && summary.unread_count > 0)) {
    if (cable.perform("read", { conversation_id: id, up_to: up })) {
      thread.readSent = up;
      if (summary) summary.unread_count = 0;
      render();
    }
  }
}

function setTyping(id, on) {
  clearTimeout(state.typing.get(id));
  state.typing.delete(id);
  if (on) state.typing.set(id, setTimeout(() => setTyping(id, false), 8000));
  if (state.selected === id) {
    $("typing").hidden = !on;
    $("typing-text").textContent = `${visitorName(state.conversations.get(id) || { id })} is typing…`;
  }
  render();
}

// ---------------------------------------------------------------- rendering

function sortedSummaries() {
  const stamp = (s) => s.updated_at || (s.last_message && s.last_message.created_at) || s.created_at || "";
  return [...state.conversations.values()].sort((a, b) => (stamp(a) < stamp(b) ? 1 : stamp(a) > stamp(b) ? -1 : 0));
}

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    const summaries = sortedSummaries();
    list.render(summaries, state.selected, new Set(state.typing.keys()));
    $("empty").hidden = summaries.length > 0;
    renderHeader();
    updateTitle();
  });
}

function updateTitle() {
  let unread = 0;
  for (const summary of state.conversations.values()) unread += summary.unread_count || 0;
  document.title = unread ? `(${unread}) ${APP_TITLE}` : APP_TITLE;
  if (navigator.setAppBadge) (unread ? navigator.setAppBadge(unread) : navigator.clearAppBadge()).catch(() => {});
}

function renderHeader() {
  const summary = state.selected && state.conversations.get(state.selected);
  if (!summary) return;
  $("thread-name").textContent = visitorName(summary);
  $("thread-avatar").replaceChildren(avatar(summary));
  const meta = $("thread-meta");
  const parts = [];
  const status = el("span", summary.online ? "status online" : "status", summary.online ? "Online" : "Offline");
  parts.push(status);
  if (summary.email) {
    const mail = el("a", null, summary.email);
    mail.href = `mailto:${summary.email}`;
    parts.push(mail);
  }
  const page = summary.page;
  if (page && page.url) {
    let safe = false;
    try { safe = /^https?:$/.test(new URL(page.url).protocol); } catch (_) { safe = false; }
    const label = pageLabel(page);
    if (safe) {
      const link = el("a", null, label);
      link.href = page.url;
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
      link.title = page.url;
      parts.push(link);
    } else {
      parts.push(el("span", null, label));
    }
  }
  const children = [];
  parts.forEach((part, i) => {
    if (i) children.push(el("span", "sep", "·"));
    children.push(part);
  });
  meta.replaceChildren(...children);
}

// ---------------------------------------------------------------- the open conversation

function openFromHash() {
  const match = /^#c=(.+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id) openConversation(id);
  else closeThread();
}

async function openConversation(id) {
  if (!started) return;
  const same = state.selected === id;
  state.selected = id;
  $("app").classList.add("has-thread");
  $("placeholder").hidden = true;
  $("thread").hidden = false;
  $("typing").hidden = !state.typing.has(id);
  $("typing-text").textContent = `${visitorName(state.conversations.get(id) || { id })} is typing…`;
  render();
  if (same) return;
  view.reset(id);
  let thread = state.threads.get(id);
  if (!thread) {
    thread = { messages: new Map(), more: false, loaded: false, seenUpTo: 0, readSent: 0 };
    state.threads.set(id, thread);
  }
  if (!thread.loaded) {
    try {
      // With `before`, the server pages backwards from the newest message; without it, it starts at the oldest.
      const page = await api(`/conversations/${encodeURIComponent(id)}/messages?before=${Number.MAX_SAFE_INTEGER}&limit=50`);
      for (const message of page.messages || []) thread.messages.set(message.id, Object.assign({ conversation_id: id }, message));
      thread.more = !!page.more;
      thread.loaded = true;
      if (!state.conversations.has(id)) await refreshConversations().catch(() => {});
    } catch (e) {
      state.threads.delete(id);
      if (state.selected !== id) return;
      if (e.status === 404) {
        toast("That conversation no longer exists.");
        location.hash = "";
      } else {
        toast("Couldn't load the conversation. Retrying when the connection is back.");
      }
      return;
    }
  }
  if (state.selected !== id) return;
  view.add([...thread.messages.values()].sort((a, b) => a.id - b.id));
  $("older").hidden = !thread.more;
  for (const item of outbox.list()) if (item.conversation_id === id) view.addPending(item, cable && cable.ready ? "Sending…" : "Waiting for connection…");
  for (const item of state.failed.values()) {
    if (item.conversation_id === id) {
      view.addPending(item);
      view.setPendingState(item.client_id, "Not sent", () => retry(item.client_id));
    }
  }
  view.setSeen(thread.seenUpTo);
  view.toBottom();
  markRead();
  if (matchMedia("(min-width: 761px)").matches) $("reply-input").focus();
}

function closeThread() {
  stopTyping();
  state.selected = null;
  $("app").classList.remove("has-thread");
  $("thread").hidden = true;
  $("placeholder").hidden = false;
  view.reset(null);
  render();
}

let loadingOlder = false;
async function loadOlder() {
  const id = state.selected;
  const thread = id && state.threads.get(id);
  if (!thread || !thread.more || loadingOlder) return;
  const oldest = Math.min(...thread.messages.keys());
  loadingOlder = true;
  $("older").disabled = true;
  try {
    const page = await api(`/conversations/${encodeURIComponent(id)}/messages?before=${oldest}&limit=50`);
    const messages = (page.messages || []).map((m) => Object.assign({ conversation_id: id }, m));
    for (const message of messages) thread.messages.set(message.id, message);
    thread.more = !!page.more;
    if (state.selected === id) {
      view.add(messages, { keepScroll: true });
      view.setSeen(thread.seenUpTo);
      $("older").hidden = !thread.more;
    }
  } catch (_) {
    toast("Couldn't load older messages.");
  } finally {
    loadingOlder = false;
    $("older").disabled = false;
  }
}

$("older").addEventListener("click", loadOlder);
$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 60) loadOlder();
}, { passive: true });

$("back").addEventListener("click", () => { location.hash = ""; });
addEventListener("hashchange", openFromHash);

// ---------------------------------------------------------------- replying

const input = $("reply-input");
let typingOn = false;
let typingAt = 0;
let typingIdle = 0;
let typingFor = null;

function stopTyping() {
  clearTimeout(typingIdle);
  if (typingOn && cable && typingFor) cable.perform("typing", { conversation_id: typingFor, typing: false });
  typingOn = false;
  typingFor = null;
}

function grow() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 180)}px`;
}

function sendReply() {
  const content = input.value.trim();
  const id = state.selected;
  if (!content || !id) return;
  const item = { client_id: uuid(7), conversation_id: id, content, created_at: new Date().toISOString() };
  outbox.add(item);
  view.addPending(item, cable && cable.ready ? "Sending…" : "Waiting for connection…");
  input.value = "";
  grow();
  stopTyping();
  if (state.synced) cable.perform("reply", { conversation_id: id, content, client_id: item.client_id });
}

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendReply();
  }
});
input.addEventListener("input", () => {
  grow();
  const id = state.selected;
  if (!id || !cable) return;
  if (!input.value.trim()) {
    stopTyping();
    return;
  }
  if (typingFor && typingFor !== id) stopTyping();
  if (!typingOn || Date.now() - typingAt > 3000) {
    if (cable.perform("typing", { conversation_id: id, typing: true })) {
      typingOn = true;
      typingFor = id;
      typingAt = Date.now();
    }
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, 4000);
});
$("reply").addEventListener("submit", (event) => {
  event.preventDefault();
  sendReply();
  input.focus();
});

// ---------------------------------------------------------------- deleting

$("delete").addEventListener("click", () => {
  const summary = state.selected && state.conversations.get(state.selected);
  $("confirm-title").textContent = `Delete the conversation with ${visitorName(summary || { id: state.selected })}?`;
  $("confirm-delete").showModal();
});
$("confirm-delete").addEventListener("close", async () => {
  const dialog = $("confirm-delete");
  const id = state.selected;
  if (dialog.returnValue !== "delete" || !id) return;
  dialog.returnValue = "";
  try {
    await api(`/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
    forget(id);
    toast("Conversation deleted.");
  } catch (e) {
    toast(e.status === 404 ? "It was already gone." : `Couldn't delete: ${e.message}`);
    if (e.status === 404) forget(id);
  }
});

// ---------------------------------------------------------------- notifications and the service worker

async function setupPush() {
  const button = $("notify");
  if (!pushSupported() || !registration) {
    button.hidden = true;
    return;
  }
  try {
    await api("/push/key");
  } catch (_) {
    button.hidden = true; // this server has no push configured
    return;
  }
  const status = await pushStatus(registration);
  button.hidden = false;
  button.disabled = status === "denied";
  button.textContent = status === "on" ? "Disable notifications" : status === "denied" ? "Notifications blocked" : "Enable notifications";
  button.dataset.status = status;
  // Re-registering an existing subscription heals a server whose data was reset.
  if (status === "on") enablePush(registration).catch(() => {});
}

$("notify").addEventListener("click", async () => {
  const button = $("notify");
  button.disabled = true;
  try {
    if (button.dataset.status === "on") {
      await disablePush(registration);
      toast("Notifications are off on this device.");
    } else {
      await enablePush(registration);
      toast("Notifications are on. You'll hear about new messages even when this tab is closed.");
    }
  } catch (e) {
    toast(e.message || "Couldn't change notifications.");
  }
  button.disabled = false;
  setupPush();
});

async function registerWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("/admin/sw.js", { scope: "/admin/" });
    registration = await navigator.serviceWorker.ready;
    if (started) setupPush();
  } catch (_) { /* no worker (e.g. plain http on a LAN address): the dashboard works without one */ }
  navigator.serviceWorker.addEventListener("message", (event) => {
    const data = event.data || {};
    if (data.type === "open-conversation" && data.conversation_id) location.hash = `c=${encodeURIComponent(data.conversation_id)}`;
  });
}

// ---------------------------------------------------------------- start

addEventListener("pointerdown", unlockSound, { passive: true });
addEventListener("keydown", unlockSound);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") markRead();
  else stopTyping();
});
setInterval(() => list.tick(sortedSummaries()), 60000);

async function boot() {
  registerWorker();
  for (let attempt = 0; ; attempt++) {
    try {
      const session = await api("/auth/session");
      if (session && session.username) $("username").value = session.username;
      startApp();
      return;
    } catch (e) {
      if (e.status === 401) {
        showLogin();
        return;
      }
      $("boot").textContent = "Can't reach natter. Retrying…";
      await new Promise((resolve) => setTimeout(resolve, Math.min(30000, 1000 * 2 ** attempt)));
    }
  }
}

boot();
