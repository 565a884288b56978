// Messages written but not yet confirmed by the server, each with its client_id, resent after every catch-up until
// the server's `message` with that client_id comes back. They live in storage under `key` and every change re-reads
// it, so two tabs never overwrite each other's unsent messages (both may send one; the server stores a client_id
// once). `isItem` tells a well-formed item from whatever else a tampered storage may hold.

import { storage } from "./storage.js";

export function createOutbox(key, isItem) {
  return {
    list() {
      try {
        const items = JSON.parse(storage.get(key) || "[]");
        return Array.isArray(items) ? items.filter((item) => item && isItem(item)) : [];
      } catch (_) {
        return [];
      }
    },
    write(items) {
      if (items.length) storage.set(key, JSON.stringify(items));
      else storage.remove(key);
    },
    add(item) {
      const items = this.list();
      if (!items.some((i) => i.client_id === item.client_id)) items.push(item);
      this.write(items);
    },
    // Takes out the items `predicate` picks, and returns them.
    remove(predicate) {
      const items = this.list();
      const removed = items.filter(predicate);
      if (removed.length) this.write(items.filter((i) => !predicate(i)));
      return removed;
    },
  };
}
