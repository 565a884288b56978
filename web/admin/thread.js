// The open conversation: its messages in id order, replies still on their way after them, "Seen" on the latest
// reply the visitor has read, and a "load older" page at the top.

import { el, richText } from "../shared/dom.js";
import { clockTime, fullTime } from "./time.js";

export class ThreadView {
  constructor({ list, scroller, older, onRetry }) {
    this.list = list;
    this.scroller = scroller;
    this.older = older;
    this.onRetry = onRetry;
    this.rows = new Map(); // "m<id>" | "c<client_id>" → row
    this.conversationId = null;
    this.seenRow = null;
  }

  reset(conversationId) {
    this.conversationId = conversationId;
    this.rows.clear();
    this.seenRow = null;
    this.list.replaceChildren();
    this.older.hidden = true;
  }

  nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  toBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  row(content, mine, when) {
    const row = el("div", "bubble-row " + (mine ? "mine" : "theirs"));
    const bubble = row.appendChild(el("div", "bubble"));
    richText(bubble, content);
    const meta = row.appendChild(el("div", "meta"));
    const time = meta.appendChild(el("time", null, clockTime(when)));
    time.dateTime = when || "";
    time.title = fullTime(when);
    meta.appendChild(el("span", "state"));
    return row;
  }

  setState(row, text, retry) {
    const state = row.querySelector(".state");
    state.textContent = text || "";
    row.classList.toggle("failed", !!retry);
    if (retry) {
      const button = state.appendChild(el("button", "link retry", "Retry"));
      button.type = "button";
      button.addEventListener("click", retry);
    }
  }

  // Adds confirmed messages (any order); returns true if any was new.
  add(messages, { keepScroll = false } = {}) {
    const stick = this.nearBottom();
    const oldHeight = this.scroller.scrollHeight;
    const oldTop = this.scroller.scrollTop;
    let added = false;
    let mineAdded = false;
    for (const message of messages) {
      if (this.rows.has("m" + message.id)) continue;
      const row = this.row(message.content, message.sender === "admin", message.created_at);
      row.dataset.id = String(message.id);
      row.dataset.sender = message.sender;
      if (message.client_id) {
        const pending = this.rows.get("c" + message.client_id);
        if (pending) {
          pending.remove();
          this.rows.delete("c" + message.client_id);
        }
      }
      this.rows.set("m" + message.id, row);
      let before = null;
      for (const child of this.list.children) {
        if (Number(child.dataset.id || Infinity) > message.id) {
          before = child;
          break;
        }
      }
      this.list.insertBefore(row, before);
      added = true;
      if (message.sender === "admin") mineAdded = true;
    }
    if (keepScroll) this.scroller.scrollTop = oldTop + (this.scroller.scrollHeight - oldHeight);
    else if (added && (stick || mineAdded)) this.toBottom();
    return added;
  }

  addPending(item, state) {
    if (this.rows.has("c" + item.client_id)) return;
    const row = this.row(item.content, true, item.created_at);
    row.classList.add("pending");
    row.dataset.cid = item.client_id;
    this.rows.set("c" + item.client_id, row);
    this.list.appendChild(row);
    this.setState(row, state || "Sending…");
    this.toBottom();
  }

  setPendingState(clientId, text, retry) {
    const row = this.rows.get("c" + clientId);
    if (row) this.setState(row, text, retry);
  }

  // "Seen" goes on the latest of our replies with an id up to what the visitor has read.
  setSeen(upTo) {
    let target = null;
    for (const row of this.list.querySelectorAll('.bubble-row.mine[data-id]')) {
      if (Number(row.dataset.id) <= upTo) target = row;
    }
    if (target === this.seenRow) return;
    if (this.seenRow) this.setState(this.seenRow, "");
    this.seenRow = target;
    if (target) this.setState(target, "Seen");
  }

  oldestId() {
    const first = this.list.querySelector("[data-id]");
    return first ? Number(first.dataset.id) : null;
  }
}
