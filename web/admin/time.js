// The dashboard's times, in the browser's locale: short ones for the list, clock and full ones for a conversation.

// "5:58 PM" or "17:58", as the browser's locale writes it: a 12-hour clock has no leading zero.
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const dateFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function shortTime(iso) {
  const date = new Date(iso);
  if (isNaN(date)) return "";
  const age = Date.now() - date.getTime();
  if (age < 60000) return "now";
  if (age < 3600000) return `${Math.floor(age / 60000)}m`;
  if (new Date().toDateString() === date.toDateString()) return timeFormat.format(date);
  if (age < 6 * 86400000) return dayFormat.format(date);
  return dateFormat.format(date);
}

export function clockTime(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : timeFormat.format(date);
}

export function fullTime(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : fullFormat.format(date);
}
