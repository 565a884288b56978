// natter dashboard: login, the live conversation list and the open conversation.
//
// How it stays true after sleep or network loss: every message has an id from one counter across the store. The
// dashboard keeps `cursor`, the highest id up to which it has seen *every* message, and after each (re)connect it
// reloads the conversation summaries over HTTP and then asks the socket for everything after the cursor (`sync`,
// repeated while the server says `more`). Live messages that arrive before that catch-up has finished are shown,
// but do not move the cursor, so nothing between the cursor and them can be skipped. Replies go through an outbox
// in localStorage with a client_id and are resent after every catch-up until their `message` comes back; the server
// stores each client_id once, so a resend never doubles a reply.
//
// This file starts and stops the app and dispatches what the socket says. The rest, one module each: state.js (what
// the dashboard knows), inbox.js (keeping it up to date), render.js (list, header, title), conversation.js (the open
// one), reply.js (the reply box), login.js, notifications.js (Web Push), list.js and thread.js (the two views).

import { connectCable } from "../shared/cable.js";
import { api } from "./api.js";
import { closeThread, openFromHash } from "./conversation.js";
import { flushOutbox, forget, ingest, markRead, notifyNew, refreshConversations, refused, setTyping, upsert } from "./inbox.js";
import { setupLogin, show, showLogin } from "./login.js";
import { registerWorker, setupPush } from "./notifications.js";
import { stopTyping } from "./reply.js";
import { clearRefusedOrigins, loadRefusedOrigins, refusedOrigin } from "./refused.js";
import { render, sortedSummaries, updateTitle } from "./render.js";
import { unlockSound } from "./sound.js";
import { $, list, outbox, state, view } from "./state.js";
import { toast } from "./toast.js";

function startApp() {
  show("app");
  if (state.started) return;
  state.started = true;
  state.synced = false;
  state.cable = connectCable({
    url: () => location.origin.replace(/^http/, "ws") + "/cable",
    channel: "AdminChannel",
    onState: connectionState,
    onConnected: catchUp,
    onReceived: received,
  });
  refreshConversations().catch(() => {});
  loadRefusedOrigins().catch(() => {});
  api("/auth/session").then((session) => {
    state.sites = session.allowed_origins || [];
    render();
  }, () => {});
  openFromHash();
  setupPush();
}

function stopApp() {
  state.started = false;
  if (state.cable) state.cable.close();
  state.cable = null;
  state.conversations.clear();
  state.threads.clear();
  state.cursor = 0;
  state.synced = false;
  state.selected = null;
  clearRefusedOrigins();
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
    api("/auth/session?optional=1").then(
      (session) => {
        stopApp();
        if (session && session.admin) startApp();
        else showLogin("Your session has ended. Please sign in again.");
      },
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
  if (state.cable && state.cable.ready) state.cable.perform("sync", { after: state.cursor });
  loadRefusedOrigins().catch(() => {});
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
        state.cable.perform("sync", { after: state.cursor });
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
    case "refused_origin":
      refusedOrigin(event.refused_origin);
      break;
    case "error":
      if (event.client_id) refused(event.client_id, event.message || event.code);
      else toast(event.message || event.code || "Something went wrong.");
      break;
    default:
  }
}

setupLogin({ signedIn: startApp, signedOut: stopApp });

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
      // `optional` answers 200 with admin false instead of 401, which the browser would log as an error on every
      // visit before the owner signs in.
      const session = await api("/auth/session?optional=1");
      if (session && session.admin) {
        if (session.username) $("username").value = session.username;
        startApp();
      } else {
        showLogin();
      }
      return;
    } catch (e) {
      $("boot").textContent = "Can't reach natter. Retrying…";
      await new Promise((resolve) => setTimeout(resolve, Math.min(30000, 1000 * 2 ** attempt)));
    }
  }
}

boot();
