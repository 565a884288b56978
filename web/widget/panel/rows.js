// One message's row in the panel: the text (links made clickable), its time, and a line that tells how it stands
// (sending, seen, not sent).

import { el, richText } from "../../shared/dom.js";

export function messageRow(content, mine, when, timeFormat) {
  const row = el("div", "row " + (mine ? "me" : "them"));
  const bubble = row.appendChild(el("div", "msg"));
  richText(bubble, content);
  const meta = row.appendChild(el("div", "meta"));
  const time = meta.appendChild(el("time"));
  const date = new Date(when);
  if (!isNaN(date)) {
    time.dateTime = date.toISOString();
    time.textContent = timeFormat.format(date);
  }
  meta.appendChild(el("span", "state"));
  return row;
}

// `retry`, for a message the server refused: the { label, onClick } of a button that sends it again.
export function setRowState(row, text, retry) {
  const state = row.querySelector(".state");
  state.textContent = text || "";
  row.classList.toggle("failed", !!retry);
  if (retry) {
    const again = state.appendChild(el("button", "link-btn retry", retry.label));
    again.type = "button";
    again.addEventListener("click", retry.onClick);
  }
}

// Confirmed rows are ordered by id; rows still on their way come after all of them.
export function placeConfirmed(list, row, id) {
  let before = null;
  for (const child of list.children) {
    const childId = Number(child.dataset.id || Infinity);
    if (childId > id) { before = child; break; }
  }
  list.insertBefore(row, before);
}
