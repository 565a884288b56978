// The conversation list: one <li> per conversation, kept and updated in place (so focus and scroll survive live
// updates), ordered by recent activity.

import { el } from "../shared/dom.js";
import { shortTime } from "./time.js";
import { avatar, pageLabel, visitorName } from "./visitor.js";

export class ConversationList {
  constructor(root, onSelect) {
    this.root = root;
    this.items = new Map();
    this.onSelect = onSelect;
  }

  // summaries: sorted, most recent first. typing: set of conversation ids whose visitor is typing.
  render(summaries, selectedId, typing) {
    const keep = new Set();
    let previous = null;
    for (const summary of summaries) {
      keep.add(summary.id);
      let item = this.items.get(summary.id);
      if (!item) {
        item = this.create(summary.id);
        this.items.set(summary.id, item);
      }
      this.fill(item, summary, summary.id === selectedId, typing.has(summary.id));
      const wanted = previous ? previous.li.nextSibling : this.root.firstChild;
      if (wanted !== item.li) this.root.insertBefore(item.li, wanted);
      previous = item;
    }
    for (const [id, item] of this.items) {
      if (!keep.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }
  }

  create(id) {
    const li = el("li", "conversation");
    li.dataset.id = id;
    const button = li.appendChild(el("button", "conversation-button"));
    button.type = "button";
    button.addEventListener("click", () => this.onSelect(id));
    const avatarSlot = button.appendChild(el("span", "avatar-slot"));
    const body = button.appendChild(el("span", "conversation-body"));
    const top = body.appendChild(el("span", "conversation-top"));
    const name = top.appendChild(el("span", "conversation-name"));
    const time = top.appendChild(el("time", "conversation-time"));
    const preview = body.appendChild(el("span", "conversation-preview"));
    const bottom = body.appendChild(el("span", "conversation-bottom"));
    const page = bottom.appendChild(el("span", "conversation-page"));
    const badge = bottom.appendChild(el("span", "unread"));
    return { li, button, avatarSlot, name, time, preview, page, badge, key: "" };
  }

  fill(item, summary, selected, typing) {
    const last = summary.last_message;
    const unread = summary.unread_count || 0;
    const label = pageLabel(summary.page);
    const key = JSON.stringify([summary.visitor_name, summary.online, last && last.id, unread, label, selected, typing, summary.updated_at]);
    item.time.textContent = shortTime(summary.updated_at || (last && last.created_at));
    if (item.key === key) return;
    item.key = key;
    item.li.classList.toggle("selected", selected);
    item.li.classList.toggle("has-unread", unread > 0);
    item.li.classList.toggle("online", !!summary.online);
    if (selected) item.button.setAttribute("aria-current", "true");
    else item.button.removeAttribute("aria-current");
    const av = avatar(summary);
    const dot = av.appendChild(el("span", "presence"));
    dot.title = summary.online ? "Online" : "Offline";
    item.avatarSlot.replaceChildren(av);
    item.name.textContent = visitorName(summary);
    item.time.dateTime = summary.updated_at || "";
    if (typing) {
      item.preview.textContent = "typing…";
      item.preview.classList.add("is-typing");
    } else {
      item.preview.classList.remove("is-typing");
      item.preview.textContent = last ? (last.sender === "admin" ? "You: " : "") + last.content.replace(/\s+/g, " ").slice(0, 140) : "No messages yet";
    }
    item.page.textContent = summary.online && label ? `On ${label}` : label;
    item.page.title = (summary.page && summary.page.url) || "";
    item.badge.textContent = unread > 99 ? "99+" : String(unread);
    item.badge.hidden = unread === 0;
    item.button.setAttribute("aria-label", `${visitorName(summary)}${summary.online ? ", online" : ""}${unread ? `, ${unread} unread` : ""}: ${item.preview.textContent}`);
  }

  // Relative times ("5m") age; refreshed once a minute without rebuilding anything else.
  tick(summaries) {
    for (const summary of summaries) {
      const item = this.items.get(summary.id);
      if (item) item.time.textContent = shortTime(summary.updated_at || (summary.last_message && summary.last_message.created_at));
    }
  }
}
