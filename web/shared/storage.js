// localStorage, which can throw (blocked third-party storage, private modes, a full quota): the values then live in
// this page's memory only.

const memory = new Map();

export const storage = {
  get(key) {
    try { return localStorage.getItem(key); } catch (_) { return memory.has(key) ? memory.get(key) : null; }
  },
  set(key, value) {
    try { localStorage.setItem(key, value); } catch (_) { memory.set(key, value); }
  },
  remove(key) {
    try { localStorage.removeItem(key); } catch (_) { memory.delete(key); }
  },
};
