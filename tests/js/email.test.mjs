// Email, the visitor's story in headless Chromium: a visitor leaves an address and closes the page, the owner replies
// in the dashboard, one email arrives (at a real SMTP server, Python's aiosmtpd on loopback); a second browser opens
// the email's link, sees the conversation and answers in it; the one-click unsubscribe POST stops further email.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { CHROMIUM, eventually, launchChromium, Natter, signIn, startBlog } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const SMTP_SERVER = path.resolve(here, "../api/smtp_server.py");

let natter;
let blog;
let browser;
let smtp;

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startSmtp() {
  const dir = mkdtempSync(path.join(tmpdir(), "natter-mail-"));
  const port = await freePort();
  const child = spawn("python3", [SMTP_SERVER, dir, String(port)], { stdio: ["pipe", "pipe", "inherit"] });
  await new Promise((resolve, reject) => {
    child.stdout.once("data", resolve);
    child.once("exit", () => reject(new Error("the SMTP server did not start (is aiosmtpd installed? tests/run installs it)")));
  });
  const mail = () => readdirSync(dir)
    .filter((name) => /^mail-\d+\.json$/.test(name))
    .sort((a, b) => parseInt(a.slice(5)) - parseInt(b.slice(5)))
    .map((name) => JSON.parse(readFileSync(path.join(dir, name), "utf8")));
  return { port, child, mail, to: (address) => mail().filter((m) => m.rcpt_tos.includes(address)) };
}

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: run tests/js/run.sh, which installs it`);
  smtp = await startSmtp();
  blog = await startBlog({
    "/": (b) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A post</title></head>
<body><h1>A post</h1><script src="${b.natter}/widget.js" defer></script></body></html>`,
  });
  const config = path.join(mkdtempSync(path.join(tmpdir(), "natter-config-")), "natter.toml");
  writeFileSync(config, `[email]
smtp_host = "127.0.0.1"
smtp_port = ${smtp.port}
smtp_security = "none"
from = "Blog chat <chat@blog.test>"
owner_address = "owner@blog.test"
reply_delay_seconds = 0
unread_delay_seconds = 0
retry_seconds = 1
`);
  natter = await Natter.start({ origins: [blog.url], env: { NATTER_CONFIG: config } });
  blog.natter = natter.url;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await natter?.cleanup();
  await blog?.close();
  smtp?.child.kill();
});

async function newAdmin() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${natter.url}/admin/`);
  await signIn(page);
  return { context, page };
}

// A visitor on the blog who asks `question`, leaves `address` (through the panel's offer while the owner is away,
// else through "Add your name") and closes the page.
async function visitorLeaves(question, name, address, { ownerAway = true } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${blog.url}/`);
  await page.locator("natter-chat .bubble").click();
  const input = page.locator("natter-chat .compose textarea");
  await input.fill(question);
  await input.press("Enter");
  await page.locator("natter-chat .list .row[data-id]").filter({ hasText: question }).waitFor();
  const offer = page.locator("natter-chat .email-offer");
  if (ownerAway) {
    await offer.waitFor({ state: "visible" });
    await offer.click();
  } else {
    await page.locator("natter-chat .foot .link-btn").click();
  }
  assert.match(await page.locator("natter-chat .email-use").textContent(), /only use your email/);
  await page.locator("natter-chat .identify input[name=name]").fill(name);
  await page.locator("natter-chat .identify input[name=email]").fill(address);
  await page.locator("natter-chat .identify button[type=submit]").click();
  await page.locator("natter-chat .identify").waitFor({ state: "hidden" });
  assert.equal(await offer.isVisible(), false, "no offer once the address is known");
  await context.close();
}

async function reply(admin, name, content) {
  await admin.page.locator("#conversations li.conversation").filter({ hasText: name }).locator("button").first().click();
  await admin.page.locator("#reply-input").fill(content);
  await admin.page.locator("#reply-input").press("Enter");
  await admin.page.locator("#message-list .bubble-row[data-id]").filter({ hasText: content }).waitFor();
}

async function outboxEmpty() {
  await eventually(async () => /natter_emails_queued 0\b/.test(await (await fetch(`${natter.url}/metrics`)).text()), { message: "the outbox empties" });
}

test("a visitor who left gets the reply by email, continues in another browser, and one click stops the email", async () => {
  await visitorLeaves("Do you ship to Norway?", "Ann", "ann@visitor.test");
  const admin = await newAdmin();
  await reply(admin, "Ann", "Yes, we do!");
  await eventually(async () => smtp.to("ann@visitor.test").length === 1, { timeout: 30000, message: "the reply email" });
  const email = smtp.to("ann@visitor.test")[0];
  assert.match(email.text, /Do you ship to Norway\?/);
  assert.match(email.text, /Yes, we do!/);

  // Another browser (the visitor's phone) opens the email's link: the conversation is there, and it can answer.
  const link = /Continue the conversation: (\S+)/.exec(email.text)[1];
  assert.ok(link.startsWith(`${blog.url}/#natter-continue=`), link);
  const phone = await browser.newContext();
  const page = await phone.newPage();
  await page.goto(link);
  await page.locator("natter-chat .list .row .msg").getByText("Yes, we do!", { exact: true }).waitFor();
  await page.locator("natter-chat .list .row .msg").getByText("Do you ship to Norway?", { exact: true }).waitFor();
  assert.ok(!page.url().includes("natter-continue"), "the code leaves the address bar");
  const input = page.locator("natter-chat .compose textarea");
  await input.fill("Great, ordering now");
  await input.press("Enter");
  await admin.page.locator("#message-list .bubble").getByText("Great, ordering now", { exact: true }).waitFor();
  await phone.close();

  // One-click unsubscribe (RFC 8058), as a mail provider sends it.
  const unsubscribe = email.headers["list-unsubscribe"].replace(/^<|>$/g, "");
  const answer = await fetch(unsubscribe, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "List-Unsubscribe=One-Click" });
  assert.equal(answer.status, 200);
  await reply(admin, "Ann", "One more thing: shipping is free");
  // Another visitor's reply email goes out after it; once the outbox is empty, Ann got nothing more.
  await visitorLeaves("And to Iceland?", "Bob", "bob@visitor.test", { ownerAway: false });
  await reply(admin, "Bob", "Iceland too");
  await eventually(async () => smtp.to("bob@visitor.test").length === 1, { timeout: 30000, message: "Bob's email" });
  await outboxEmpty();
  assert.equal(smtp.to("ann@visitor.test").length, 1, "no email after unsubscribing");
  await admin.context.close();
});
