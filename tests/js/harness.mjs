// Test harness: runs the real natter binary on a free port with a fresh data directory, restarts it on the same
// port and data, logs in as the admin, serves a "blog" from another origin, and launches Debian's Chromium.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const NATTER_BIN = process.env.NATTER_BIN || path.resolve(here, "../../target/debug/natter");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ADMIN_PASSWORD = "correct horse battery staple";

// Signs in on the dashboard's login form, which `page` shows, and waits for the dashboard.
export async function signIn(page) {
  await page.fill("#username", "admin");
  await page.fill("#password", ADMIN_PASSWORD);
  await page.click("#login-submit");
  await page.locator("#app").waitFor();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `check` until it returns a truthy value (which is returned) or the time is up (which throws, with the last
// error or value in the message). Tests wait for conditions this way instead of asserting on timings.
export async function eventually(check, { timeout = 15000, interval = 100, message = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    }
    await sleep(interval);
  }
}

export class Natter {
  constructor({ origins = [], env = {} } = {}) {
    this.dataDir = mkdtempSync(path.join(tmpdir(), "natter-test-"));
    this.origins = origins;
    this.env = env;
    this.listen = "127.0.0.1:0";
    this.log = [];
    this.child = null;
    this.url = null;
  }

  static async start(options) {
    const natter = new Natter(options);
    await natter.start();
    return natter;
  }

  async start() {
    if (!existsSync(NATTER_BIN)) throw new Error(`natter binary not found at ${NATTER_BIN}: run cargo build first or set NATTER_BIN`);
    const child = spawn(NATTER_BIN, [], {
      env: {
        ...process.env,
        NATTER_LISTEN: this.listen,
        NATTER_DATA_DIR: this.dataDir,
        NATTER_ADMIN_PASSWORD: ADMIN_PASSWORD,
        NATTER_ALLOWED_ORIGINS: this.origins.join(","),
        RUST_LOG: process.env.RUST_LOG || "info",
        ...this.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    const url = await new Promise((resolve, reject) => {
      let buffer = "";
      const onData = (chunk) => {
        const text = chunk.toString();
        this.log.push(text);
        buffer += text;
        const match = /listening on (https?:\/\/[^\s"']+)/.exec(buffer);
        if (match) resolve(match[1].replace(/\/+$/, ""));
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", (chunk) => this.log.push(chunk.toString()));
      this.exited.then(({ code, signal }) => reject(new Error(`natter exited (${code ?? signal}) before listening:\n${this.log.join("")}`)));
      setTimeout(() => reject(new Error(`natter did not report its address within 20 s:\n${this.log.join("")}`)), 20000);
    });
    this.url = url;
    this.listen = new URL(url).host;
    return this;
  }

  async stop() {
    if (!this.child) return;
    const child = this.child;
    this.child = null;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
    await this.exited;
    clearTimeout(timer);
  }

  async restart() {
    await this.stop();
    // The port was just released; retry briefly in case the kernel still holds it.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.start();
      } catch (error) {
        if (attempt >= 5) throw error;
        await sleep(300);
      }
    }
  }

  async cleanup() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  get wsUrl() {
    return this.url.replace(/^http/, "ws") + "/cable";
  }

  // A plain HTTP request with full control over headers (Origin, Cookie), which fetch would not give.
  request(method, route, { body, headers = {} } = {}) {
    const target = new URL(route, this.url);
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request(target, {
        method,
        headers: {
          Accept: "application/json",
          ...(payload ? { "Content-Type": "application/json", "Content-Length": payload.length } : {}),
          ...headers,
        },
      }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          let json = null;
          try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
      });
      req.on("error", reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  // Logs in as the admin and returns the `natter_session=...` cookie pair.
  async login() {
    const res = await this.request("POST", "/auth/login", {
      body: { username: "admin", password: ADMIN_PASSWORD },
      headers: { Origin: this.url },
    });
    if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.text}`);
    const cookies = [].concat(res.headers["set-cookie"] || []);
    const session = cookies.map((c) => c.split(";")[0]).find((c) => c.startsWith("natter_session="));
    if (!session) throw new Error(`login set no natter_session cookie: ${JSON.stringify(cookies)}`);
    return session;
  }

  async adminGet(cookie, route) {
    const res = await this.request("GET", route, { headers: { Cookie: cookie, Origin: this.url } });
    if (res.status !== 200) throw new Error(`GET ${route}: ${res.status} ${res.text}`);
    return res.json;
  }
}

// A tiny static "blog" on its own origin. `pages` maps a path to a function returning HTML (or {body, headers}); the natter URL is
// filled in later through `blog.natter`, because natter's allowed origins must name the blog before it starts.
export async function startBlog(pages) {
  const blog = { natter: null };
  const server = http.createServer((req, res) => {
    const page = pages[new URL(req.url, "http://x").pathname];
    if (!page) {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found");
      return;
    }
    const made = page(blog);
    const { body, headers = {} } = typeof made === "string" ? { body: made } : made;
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", ...headers });
    res.end(body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  blog.url = `http://127.0.0.1:${server.address().port}`;
  blog.close = () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(resolve); });
  return blog;
}

export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

// A bare ActionCable socket for one channel, for the parts of a test that play the other side. `events` collects
// every data message; `next(predicate)` waits for one.
export async function rawCable(url, { channel, origin, cookie }) {
  const { default: WebSocket } = await import("ws");
  const headers = cookie ? { Cookie: cookie } : {};
  const ws = new WebSocket(url, ["actioncable-v1-json"], { origin, headers });
  const identifier = JSON.stringify({ channel });
  const cable = {
    ws,
    events: [],
    frames: [],
    perform(action, data = {}) {
      ws.send(JSON.stringify({ command: "message", identifier, data: JSON.stringify({ ...data, action }) }));
    },
    next(predicate, message = "a cable event") {
      return eventually(() => cable.events.find(predicate), { message });
    },
    close() { ws.close(); },
  };
  ws.on("message", (raw) => {
    const frame = JSON.parse(raw.toString());
    cable.frames.push(frame);
    if (frame.type === "welcome") ws.send(JSON.stringify({ command: "subscribe", identifier }));
    if (frame.identifier === identifier && frame.message) cable.events.push(frame.message);
  });
  await new Promise((resolve, reject) => {
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once("open", resolve);
  });
  await eventually(() => cable.frames.find((f) => f.identifier === identifier && /_subscription$/.test(f.type || "")), { message: `a subscription answer for ${channel}` });
  cable.confirmed = cable.frames.some((f) => f.identifier === identifier && f.type === "confirm_subscription");
  return cable;
}
