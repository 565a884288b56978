// natter speaks the ActionCable protocol, so the official @rails/actioncable client must work against it unchanged:
// connect, subscribe, perform, receive, get rejected where it should, and reconnect by itself after a restart.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import ActionCable from "@rails/actioncable";
import WebSocket from "ws";
import { eventually, Natter, rawCable } from "./harness.mjs";

// ActionCable is browser code: its ConnectionMonitor listens for visibilitychange on the global object.
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
globalThis.document ??= { visibilityState: "visible" };
ActionCable.adapters.logger = { log() {} };

const BLOG = "http://blog.test";

// The server refuses sockets whose Origin is not allowed, and the admin is known by its cookie; a browser sends
// both by itself, ws needs them as options. ActionCable opens sockets with `new adapters.WebSocket(url, protocols)`,
// so the options are looked up by URL.
const socketOptions = new Map();
class NodeWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, socketOptions.get(String(url)) || {});
  }
}
ActionCable.adapters.WebSocket = NodeWebSocket;

function consumer(url, options) {
  socketOptions.set(url, options);
  return ActionCable.createConsumer(url);
}

// Subscribes and records what the mixin callbacks see.
function subscribe(cable, channel) {
  const seen = { connected: 0, disconnected: 0, rejected: 0, received: [] };
  seen.subscription = cable.subscriptions.create({ channel }, {
    connected() { seen.connected += 1; },
    disconnected() { seen.disconnected += 1; },
    rejected() { seen.rejected += 1; },
    received(data) { seen.received.push(data); },
  });
  return seen;
}

let natter;
const consumers = [];
before(async () => {
  natter = await Natter.start({ origins: [BLOG] });
});
after(async () => {
  for (const c of consumers) c.disconnect();
  await natter.cleanup();
});

test("the official ActionCable client talks to natter, and reconnects by itself after a restart", async () => {
  const token = randomUUID();
  const visitorCable = consumer(`${natter.wsUrl}?token=${token}`, { origin: BLOG });
  consumers.push(visitorCable);
  const visitor = subscribe(visitorCable, "VisitorChannel");
  await eventually(() => visitor.connected === 1, { message: "the visitor subscription to connect" });
  assert.equal(visitorCable.connection.getProtocol(), "actioncable-v1-json");

  visitor.subscription.perform("sync", {});
  const history = await eventually(() => visitor.received.find((e) => e.type === "history"), { message: "history" });
  assert.equal(history.conversation, null, "opening the chat creates no conversation");
  assert.deepEqual(history.messages, []);

  const cookie = await natter.login();
  const adminCable = consumer(natter.wsUrl, { origin: natter.url, headers: { Cookie: cookie } });
  consumers.push(adminCable);
  const admin = subscribe(adminCable, "AdminChannel");
  await eventually(() => admin.connected === 1, { message: "the admin subscription to connect" });

  const speakId = randomUUID();
  visitor.subscription.perform("speak", { content: "Hello from @rails/actioncable", client_id: speakId });
  const mine = await eventually(() => visitor.received.find((e) => e.type === "message" && e.message.client_id === speakId), { message: "the visitor's own message back" });
  assert.equal(mine.message.sender, "visitor");
  assert.equal(mine.message.content, "Hello from @rails/actioncable");
  assert.equal(typeof mine.message.id, "number");
  const seenByAdmin = await eventually(() => admin.received.find((e) => e.type === "message" && e.message.client_id === speakId), { message: "the admin to receive the visitor's message" });
  const conversationId = seenByAdmin.conversation_id;
  assert.ok(conversationId, "admin message events carry conversation_id");
  assert.equal(seenByAdmin.message.id, mine.message.id);

  const replyId = randomUUID();
  admin.subscription.perform("reply", { conversation_id: conversationId, content: "Hi! How can I help?", client_id: replyId });
  const reply = await eventually(() => visitor.received.find((e) => e.type === "message" && e.message.client_id === replyId), { message: "the visitor to receive the reply" });
  assert.equal(reply.message.sender, "admin");

  // Restart: the server says goodbye (disconnect, reconnect: true) and ActionCable's ConnectionMonitor reconnects.
  const lastSeen = reply.message.id;
  await natter.restart();
  const missedCookie = await natter.login();
  const other = await rawCable(natter.wsUrl, { channel: "AdminChannel", origin: natter.url, cookie: missedCookie });
  const missedId = randomUUID();
  other.perform("reply", { conversation_id: conversationId, content: "Sent while you were away", client_id: missedId });
  await other.next((e) => e.type === "message" && e.message.client_id === missedId, "the reply sent during the gap");
  other.close();

  await eventually(() => visitor.connected >= 2, { timeout: 45000, message: "ActionCable to reconnect the visitor by itself" });
  const before = visitor.received.length;
  visitor.subscription.perform("sync", { after: lastSeen });
  const catchUp = await eventually(() => visitor.received.slice(before).find((e) => e.type === "history"), { message: "history after the reconnect" });
  assert.deepEqual(catchUp.messages.map((m) => m.client_id), [missedId], "sync returns exactly what came after the last id seen");
  await eventually(() => admin.connected >= 2, { timeout: 45000, message: "ActionCable to reconnect the admin by itself" });
});

test("a visitor connection cannot subscribe to the admin channel", async () => {
  const cable = consumer(`${natter.wsUrl}?token=${randomUUID()}`, { origin: BLOG });
  consumers.push(cable);
  const sneaky = subscribe(cable, "AdminChannel");
  await eventually(() => sneaky.rejected === 1, { message: "reject_subscription" });
  assert.equal(sneaky.connected, 0);
});

test("a socket from an origin that is not allowed is refused before the upgrade", async () => {
  await assert.rejects(
    rawCable(`${natter.wsUrl}?token=${randomUUID()}`, { channel: "VisitorChannel", origin: "http://evil.test" }),
    /upgrade refused: 403/,
  );
});
