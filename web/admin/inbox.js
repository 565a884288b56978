// The conversations as the dashboard knows them: summaries from the server, messages from the socket, replies on their
// way. Every change ends in render().

import { api } from "./api.js";
import { render } from "./render.js";
import { chime } from "./sound.js";
import { $, outbox, state, view } from "./state.js";
import { toast } from "./toast.js";
import { visitorName } from "./visitor.js";

export async function refreshConversations() {
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

export function upsert(summary) {
  const old = state.conversations.get(summary.id);
  if (old && old.last_message && (!summary.last_message || old.last_message.id > summary.last_message.id)) {
    summary = Object.assign({}, summary, { last_message: old.last_message, updated_at: old.updated_at });
  }
  state.conversations.set(summary.id, summary);
}

// Records a message everywhere it shows. Returns true for a visitor message the dashboard had not seen before.
export function ingest(message, live) {
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

export function notifyNew() {
  chime();
}

export function forget(id) {
  state.conversations.delete(id);
  state.threads.delete(id);
  outbox.remove((item) => item.conversation_id === id);
  if (state.selected === id) {
    toast("The conversation was deleted.");
    location.hash = "";
  }
  render();
}

export function refused(clientId, reason) {
  const [item] = outbox.remove((i) => i.client_id === clientId);
  if (item) state.failed.set(clientId, item);
  view.setPendingState(clientId, `Not sent${reason ? `: ${reason}` : ""}`, () => retry(clientId));
}

export function retry(clientId) {
  const item = state.failed.get(clientId);
  if (!item) return;
  state.failed.delete(clientId);
  outbox.add(item);
  view.setPendingState(clientId, "Sending…");
  if (state.synced) state.cable.perform("reply", { conversation_id: item.conversation_id, content: item.content, client_id: item.client_id });
}

export function flushOutbox() {
  if (!state.synced) return;
  for (const item of outbox.list()) {
    state.cable.perform("reply", { conversation_id: item.conversation_id, content: item.content, client_id: item.client_id });
  }
}

export function markRead() {
  const id = state.selected;
  if (!id || !state.synced || !state.cable || document.visibilityState !== "visible") return;
  const thread = state.threads.get(id);
  const summary = state.conversations.get(id);
  if (!thread || !thread.loaded) return;
  let up = 0;
  for (const messageId of thread.messages.keys()) if (messageId > up) up = messageId;
  if (!up) return;
  if (up > thread.readSent || (summary && summary.unread_count > 0)) {
    if (state.cable.perform("read", { conversation_id: id, up_to: up })) {
      thread.readSent = up;
      if (summary) summary.unread_count = 0;
      render();
    }
  }
}

export function setTyping(id, on) {
  clearTimeout(state.typing.get(id));
  state.typing.delete(id);
  if (on) state.typing.set(id, setTimeout(() => setTyping(id, false), 8000));
  if (state.selected === id) {
    $("typing").hidden = !on;
    $("typing-text").textContent = `${visitorName(state.conversations.get(id) || { id })} is typing…`;
  }
  render();
}
