// Draws the conversation list, the open conversation's header and the page title from the state, once (a microtask
// later) however many changes came in together.

import { el } from "../shared/dom.js";
import { $, list, state } from "./state.js";
import { avatar, mailtoHref, pageHref, pageLabel, visitorName } from "./visitor.js";

const APP_TITLE = "natter";

export function sortedSummaries() {
  const stamp = (s) => s.updated_at || (s.last_message && s.last_message.created_at) || s.created_at || "";
  return [...state.conversations.values()].sort((a, b) => (stamp(a) < stamp(b) ? 1 : stamp(a) > stamp(b) ? -1 : 0));
}

let renderQueued = false;
export function render() {
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

export function updateTitle() {
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
    const href = mailtoHref(summary.email);
    const mail = el(href ? "a" : "span", null, summary.email);
    if (href) mail.href = href;
    parts.push(mail);
  }
  const page = summary.page;
  if (page && page.url) {
    const label = pageLabel(page);
    const href = pageHref(page, state.sites);
    if (href) {
      const link = el("a", null, label);
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
      link.title = href;
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
