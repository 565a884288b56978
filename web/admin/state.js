// What the dashboard knows and shows, shared by its modules: the conversations and open threads, the socket, the
// outbox of unsent replies, and the two views. The rules that keep it true are at the top of admin.js.

import { createOutbox } from "../shared/outbox.js";
import { ConversationList } from "./list.js";
import { ThreadView } from "./thread.js";

export const $ = (id) => document.getElementById(id);

export const state = {
  conversations: new Map(), // id → summary, as the server last described it plus live updates
  threads: new Map(), // id → { messages: Map(id → message), more, loaded, seenUpTo, readSent }
  cursor: 0, // every message with id ≤ cursor has been seen (see the top of admin.js)
  synced: false, // the catch-up after the current connect has finished
  selected: null, // the open conversation's id
  typing: new Map(), // conversation id → timer that clears the visitor's typing flag
  failed: new Map(), // client_id → reply the server refused; only a click retries it
  cable: null, // the socket while signed in
  started: false, // signed in and running
  sites: [], // the origins the widget is on (widget.allowed_origins, from the session): the pages the dashboard links to
};

export const list = new ConversationList($("conversations"), (id) => { location.hash = `c=${encodeURIComponent(id)}`; });
export const view = new ThreadView({
  list: $("message-list"),
  scroller: $("messages"),
  older: $("older"),
});

// Replies not yet confirmed by the server (see shared/outbox.js).
export const outbox = createOutbox("natter:admin-outbox", (i) => i.client_id && i.conversation_id && typeof i.content === "string");
