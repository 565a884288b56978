// The reply box: Enter sends, the visitor sees "typing…" while the owner writes, and each reply goes through the outbox.

import { uuid } from "../shared/uuid.js";
import { $, outbox, state, view } from "./state.js";

const input = $("reply-input");
let typingOn = false;
let typingAt = 0;
let typingIdle = 0;
let typingFor = null;

export function stopTyping() {
  clearTimeout(typingIdle);
  if (typingOn && state.cable && typingFor) state.cable.perform("typing", { conversation_id: typingFor, typing: false });
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
  view.addPending(item, state.cable && state.cable.ready ? "Sending…" : "Waiting for connection…");
  input.value = "";
  grow();
  stopTyping();
  if (state.synced) state.cable.perform("reply", { conversation_id: id, content, client_id: item.client_id });
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
  if (!id || !state.cable) return;
  if (!input.value.trim()) {
    stopTyping();
    return;
  }
  if (typingFor && typingFor !== id) stopTyping();
  if (!typingOn || Date.now() - typingAt > 3000) {
    if (state.cable.perform("typing", { conversation_id: id, typing: true })) {
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
