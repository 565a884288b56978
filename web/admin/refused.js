// Pages refused for their origin: a blog (or a local preview of it) whose origin is not in widget.allowed_origins
// shows a chat that cannot connect, and only the visitor's browser console would say why. The server remembers each
// refused origin; the dashboard says it in plain words, with the fix, until the owner dismisses it.

import { el } from "../shared/dom.js";
import { api } from "./api.js";
import { $ } from "./state.js";

const shown = new Map(); // origin → the entry last shown
const dismissed = new Set(); // origins the owner closed, until they are refused again after that

function render() {
  const box = $("refused-origins");
  const entries = [...shown.values()].filter((entry) => !dismissed.has(entry.origin));
  box.hidden = entries.length === 0;
  box.replaceChildren(...entries.map((entry) => {
    const item = el("div", "refused-origin");
    const text = item.appendChild(el("p"));
    text.append("A page on ", el("strong", null, entry.origin), " tried to open the chat and was refused. ");
    text.append("To allow it, add it to ", el("code", null, "widget.allowed_origins"), " (or ",
      el("code", null, "NATTER_ALLOWED_ORIGINS"), ") and restart natter.");
    const close = item.appendChild(el("button", "ghost small", "Dismiss"));
    close.type = "button";
    close.setAttribute("aria-label", `Dismiss the notice about ${entry.origin}`);
    close.addEventListener("click", () => {
      dismissed.add(entry.origin);
      render();
    });
    return item;
  }));
}

// A refusal the socket announced: shown again even if an older notice for the same origin was dismissed.
export function refusedOrigin(entry) {
  if (!entry || typeof entry.origin !== "string") return;
  dismissed.delete(entry.origin);
  shown.set(entry.origin, entry);
  render();
}

// What the server remembers, after each (re)connect.
export async function loadRefusedOrigins() {
  const { refused_origins: entries } = await api("/refused_origins");
  for (const entry of entries || []) if (!shown.has(entry.origin)) shown.set(entry.origin, entry);
  render();
}

export function clearRefusedOrigins() {
  shown.clear();
  dismissed.clear();
  render();
}
