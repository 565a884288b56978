// The open conversation: opening it from the URL's #c=<id>, loading its pages of history, closing and deleting it.

import { api } from "./api.js";
import { forget, markRead, refreshConversations, retry } from "./inbox.js";
import { stopTyping } from "./reply.js";
import { render } from "./render.js";
import { $, outbox, state, view } from "./state.js";
import { toast } from "./toast.js";
import { visitorName } from "./visitor.js";

export function openFromHash() {
  const match = /^#c=(.+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id) openConversation(id);
  else closeThread();
}

async function openConversation(id) {
  if (!state.started) return;
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
  for (const item of outbox.list()) if (item.conversation_id === id) view.addPending(item, state.cable && state.cable.ready ? "Sending…" : "Waiting for connection…");
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

export function closeThread() {
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
