// The panel's elements, built once (hidden) when the panel loads. Nothing here talks to the server: panel.js wires
// the elements to the conversation.

import { el } from "../../shared/dom.js";

function icon(d) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "path")).setAttribute("d", d);
  return svg;
}

export function buildPanel(cfg, lang, t) {
  const panel = el("section", "panel");
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", cfg.title || "Chat");
  panel.lang = lang;
  panel.dataset.side = cfg.position;
  panel.style.setProperty("--natter-color", cfg.color);
  panel.style.setProperty("--natter-fg", cfg.fg);

  const head = panel.appendChild(el("header", "head"));
  const who = head.appendChild(el("div", "who"));
  const title = who.appendChild(el("h2", "title", cfg.title || "Chat"));
  title.id = "natter-title";
  const status = who.appendChild(el("p", "status"));
  status.appendChild(el("span", "dot")).setAttribute("aria-hidden", "true");
  const statusText = status.appendChild(el("span", "status-text", t.connecting));
  const closeBtn = head.appendChild(el("button", "icon-button close"));
  closeBtn.type = "button";
  closeBtn.setAttribute("aria-label", t.close);
  closeBtn.appendChild(icon("M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z"));

  const banner = panel.appendChild(el("div", "banner", t.reconnecting));
  banner.setAttribute("role", "status");
  banner.hidden = true;

  const log = panel.appendChild(el("div", "log"));
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-label", t.log);
  log.tabIndex = 0;
  const intro = log.appendChild(el("div", "intro"));
  if (cfg.greeting) intro.appendChild(el("p", "greeting", cfg.greeting));
  const awayNote = intro.appendChild(el("p", "away-note", cfg.away_message || ""));
  awayNote.hidden = true;
  // With email on (cfg.email), a visitor who may leave before the owner answers is offered to leave an address.
  const emailOffer = intro.appendChild(el("button", "link-btn email-offer", t.emailOffer));
  emailOffer.type = "button";
  emailOffer.hidden = true;
  const list = log.appendChild(el("div", "list"));

  const typing = panel.appendChild(el("div", "typing"));
  typing.hidden = true;
  typing.appendChild(el("span", "dots")).append(el("i"), el("i"), el("i"));
  typing.appendChild(el("span", "typing-text", t.typing));

  const form = panel.appendChild(el("form", "identify"));
  form.hidden = true;
  form.noValidate = false;
  const nameInput = form.appendChild(el("input"));
  nameInput.name = "name";
  nameInput.maxLength = 80;
  nameInput.required = true;
  nameInput.autocomplete = "name";
  nameInput.placeholder = t.name;
  nameInput.setAttribute("aria-label", t.name);
  const emailInput = form.appendChild(el("input"));
  emailInput.type = "email";
  emailInput.name = "email";
  emailInput.maxLength = 254;
  emailInput.autocomplete = "email";
  emailInput.placeholder = t.email;
  emailInput.setAttribute("aria-label", t.email);
  const emailUse = form.appendChild(el("p", "email-use", t.emailUse));
  emailUse.hidden = !cfg.email;
  emailUse.style.margin = "0";
  emailUse.style.fontSize = "12px";
  const formButtons = form.appendChild(el("div", "form-buttons"));
  const cancelBtn = formButtons.appendChild(el("button", "link-btn", t.cancel));
  cancelBtn.type = "button";
  formButtons.appendChild(el("button", "small-btn", t.save)).type = "submit";

  const compose = panel.appendChild(el("form", "compose"));
  const input = compose.appendChild(el("textarea"));
  input.rows = 1;
  input.maxLength = 4000;
  input.placeholder = t.placeholder;
  input.setAttribute("aria-label", t.placeholder);
  input.setAttribute("aria-describedby", "natter-hint");
  const sendBtn = compose.appendChild(el("button", "send"));
  sendBtn.type = "submit";
  sendBtn.setAttribute("aria-label", t.send);
  sendBtn.appendChild(icon("M3.4 20.4 21.9 12.5a.6.6 0 0 0 0-1L3.4 3.6a.6.6 0 0 0-.8.7L4.9 11 15 12 4.9 13l-2.3 6.7a.6.6 0 0 0 .8.7z"));
  const hint = compose.appendChild(el("span", "sr-only", t.hint));
  hint.id = "natter-hint";

  const foot = panel.appendChild(el("footer", "foot"));
  const whoBtn = foot.appendChild(el("button", "link-btn", t.identify));
  whoBtn.type = "button";
  // Web Push for the visitor, offered once the owner has replied. A service worker cannot be registered on the
  // blog's origin, so natter's own page subscribes in a small window; the token rides in the URL fragment, which
  // reaches no server and no log (panel.js opens it).
  const notifyRow = panel.insertBefore(el("div", "notify-row"), foot);
  notifyRow.hidden = true;
  notifyRow.style.padding = "2px 16px 0";
  notifyRow.style.fontSize = "12px";
  notifyRow.style.background = "var(--bg)";
  const notifyBtn = notifyRow.appendChild(el("button", "link-btn", t.notify));
  notifyBtn.type = "button";
  foot.appendChild(el("span", "powered", t.powered));

  return {
    panel, statusText, closeBtn, banner, log, awayNote, emailOffer, list, typing, form, nameInput, emailInput,
    cancelBtn, compose, input, whoBtn, notifyRow, notifyBtn,
  };
}
