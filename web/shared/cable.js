// A small ActionCable client for one channel, shared by the dashboard and the widget's panel.
//
// welcome → subscribe → confirm_subscription, with the server's pings as the heartbeat: ten seconds without any
// frame means the socket is dead even if the browser still calls it open (the classic laptop-wakes-up case), so it
// is dropped and replaced. Reconnects back off exponentially with jitter, and happen at once when the network
// returns or the tab becomes visible again. Each (re)subscription calls `onConnected`, where the caller syncs.
//
// `url` is a function, asked again at each connect (the widget's token can change). `onState(state, reason)` hears
// "connected", "reconnecting", or "failed" when the server said not to come back: `reason` is then "rejected" (the
// subscription was refused) or the reason of the server's `disconnect`.

export function connectCable({ url, channel, onState, onConnected, onReceived }) {
  const identifier = JSON.stringify({ channel });
  let ws = null;
  let ready = false;
  let attempts = 0;
  let timer = 0;
  let seen = 0;
  let stopped = false;

  const send = (frame) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  };

  function drop() {
    const old = ws;
    ws = null;
    ready = false;
    if (old) {
      old.onclose = old.onmessage = old.onerror = null;
      try { old.close(); } catch (_) { /* already closed */ }
    }
  }

  function retry() {
    onState("reconnecting");
    if (timer || stopped) return;
    const delay = Math.min(30000, 1000 * 2 ** attempts++) * (0.5 + Math.random() / 2);
    timer = setTimeout(open, delay);
  }

  function open() {
    clearTimeout(timer);
    timer = 0;
    drop();
    if (stopped) return;
    seen = Date.now();
    let sock;
    try {
      sock = ws = new WebSocket(url(), ["actioncable-v1-json"]);
    } catch (_) {
      ws = null;
      retry();
      return;
    }
    sock.onmessage = (event) => {
      if (sock !== ws) return;
      seen = Date.now();
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      switch (frame.type) {
        case "welcome":
          send({ command: "subscribe", identifier });
          break;
        case "ping":
          break;
        case "confirm_subscription":
          if (frame.identifier !== identifier) break;
          ready = true;
          attempts = 0;
          onState("connected");
          onConnected();
          break;
        case "reject_subscription":
          stopped = true;
          drop();
          onState("failed", "rejected");
          break;
        case "disconnect":
          drop();
          if (frame.reconnect === false) {
            stopped = true;
            onState("failed", frame.reason);
          } else {
            retry();
          }
          break;
        default:
          if (frame.identifier === identifier && frame.message) onReceived(frame.message);
      }
    };
    sock.onclose = () => {
      if (sock !== ws) return;
      ws = null;
      ready = false;
      retry();
    };
  }

  const watchdog = setInterval(() => {
    if (ws && Date.now() - seen > 10000) {
      drop();
      retry();
    }
  }, 2000);
  const kick = () => {
    if (!ws && !stopped) {
      attempts = 0;
      open();
    }
  };
  const onVisible = () => {
    if (document.visibilityState !== "visible") return;
    if (ws && Date.now() - seen > 6000) drop();
    kick();
  };
  addEventListener("online", kick);
  document.addEventListener("visibilitychange", onVisible);
  open();

  return {
    get ready() { return ready; },
    perform(action, data = {}) {
      return ready && send({ command: "message", identifier, data: JSON.stringify({ ...data, action }) });
    },
    // Connects again after the server said not to (the widget, once it has a fresh token).
    restart() {
      stopped = false;
      attempts = 0;
      open();
    },
    // For good (the dashboard, on logging out).
    close() {
      stopped = true;
      clearInterval(watchdog);
      clearTimeout(timer);
      removeEventListener("online", kick);
      document.removeEventListener("visibilitychange", onVisible);
      drop();
    },
  };
}
