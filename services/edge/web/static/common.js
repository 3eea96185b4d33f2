// What every page shares: the test hooks, a device's tokens (localStorage), pairing, token
// renewal and one Socket.IO connection that survives edge restarts and token expiry (SPEC 10).
import { io } from "./vendor/socket.io.esm.min.js";

export const $ = (selector, root = document) => root.querySelector(selector);

/** The public hook: pairing | connecting | connected | offline | expired. */
export function setState(state) {
  document.body.dataset.state = state;
}

/** Show `text` in the page's message line (empty hides it). */
export function say(text, tone = "info") {
  const line = $("[data-message]");
  if (!line) return;
  line.textContent = text;
  line.dataset.tone = tone;
  line.hidden = !text;
}

/** A v4 uuid from getRandomValues (randomUUID needs a secure context; a LAN kiosk may lack it). */
export function uuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A JWT's claims (not verified: the edge does that; the page only reads exp and its ids). */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

/** Compare two stream ids ("ms-seq") as the edge does. */
export function compareIds(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

export function readJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null");
  } catch {
    return null;
  }
}

export function writeJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or blocked (a private window): the page still works until it reloads.
  }
}

/** One device's tokens, kept in localStorage under `rd.<kind>` (one page kind per device). */
export class Session {
  constructor(kind, role) {
    this.kind = kind;
    this.role = role;
    this.key = `rd.${kind}.tokens`;
    this.tokens = readJson(this.key);
    if (this.tokens && !this.valid(this.tokens)) this.tokens = null;
  }

  valid(tokens) {
    const claims = claimsOf(tokens.accessToken ?? "");
    return Boolean(claims && tokens.refreshToken && claims.role === this.role);
  }

  get claims() {
    return this.tokens ? claimsOf(this.tokens.accessToken) : null;
  }

  save(accessToken, refreshToken) {
    const tokens = { accessToken, refreshToken };
    if (!this.valid(tokens)) return false;
    this.tokens = tokens;
    writeJson(this.key, tokens);
    return true;
  }

  clear() {
    this.tokens = null;
    localStorage.removeItem(this.key);
  }

  /**
   * Tokens from the address bar's fragment (`#access=…&refresh=…`), which never reaches a
   * server or its logs; taken out of the address bar at once. Returns the fragment's other
   * parameters.
   */
  takeFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const access = params.get("access");
    const refresh = params.get("refresh");
    params.delete("access");
    params.delete("refresh");
    if (access || refresh) {
      history.replaceState(null, "", location.pathname + location.search);
      if (!(access && refresh && this.save(access, refresh))) {
        say(`The link's tokens are not a ${this.role}'s: pair this device instead.`, "error");
      }
    }
    return params;
  }
}

export class RefreshRejected extends Error {}

/** POST /api/auth/refresh: new tokens, or RefreshRejected (401: the pairing ended). */
export async function renewTokens(session) {
  const claims = session.claims;
  const response = await fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refreshToken: session.tokens.refreshToken, screenId: claims.screenId }),
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 400) {
    const body = await response.json().catch(() => ({}));
    throw new RefreshRejected(body.error || "the refresh token was refused");
  }
  if (!response.ok) throw new Error(`refresh answered HTTP ${response.status}`);
  const body = await response.json();
  session.save(body.accessToken, body.refreshToken);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Pair this device: ask for a code, show it, poll until an operator approves it. A code
 * that expires is replaced by a new one; an unreachable edge is retried.
 */
export async function pair(session, { onCode } = {}) {
  setState("pairing");
  const panel = $("[data-pairing]");
  if (panel) panel.hidden = false;
  let delay = 1000;
  for (;;) {
    let pairing;
    try {
      const response = await fetch("/api/pair", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ role: session.role }),
        cache: "no-store",
      });
      if (response.status === 429) {
        $("[data-pairing-code]").textContent = "········";
        say("Too many pairing requests from this address; trying again in a minute.", "error");
        await sleep(60_000);
        continue;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      pairing = await response.json();
    } catch {
      say("The edge is not reachable; trying again.", "error");
      await sleep(delay);
      delay = Math.min(delay * 2, 30_000);
      continue;
    }
    delay = 1000;
    $("[data-pairing-code]").textContent = pairing.code;
    onCode?.(pairing.code);
    const approved = await poll(pairing);
    if (approved) {
      if (panel) panel.hidden = true;
      session.save(approved.accessToken, approved.refreshToken);
      say("");
      return;
    }
  }
}

async function poll(pairing) {
  const url = `/api/pair/${encodeURIComponent(pairing.pairingId)}`;
  while (Date.now() / 1000 < pairing.expiresAt + 5) {
    await sleep(1500);
    let response;
    try {
      response = await fetch(url, { cache: "no-store" });
    } catch {
      continue; // the edge restarts: the pairing is in Redis and survives it
    }
    if (response.status === 200) return response.json();
    if (response.status === 404 || response.status === 410) return null;
  }
  return null;
}

const REFUSALS_TO_RENEW = new Set(["TOKEN_EXPIRED", "INVALID_TOKEN"]);
const RENEW_BEFORE_S = 90; // the edge warns 60 s before exp; renew before it has to

/**
 * One Socket.IO connection of a paired device. It connects with the current access token
 * (and `extraAuth()`, e.g. a screen's lastEventId), renews the token before expiry
 * (`/api/auth/refresh`, then `auth:refresh` on the live connection), reconnects after the
 * edge restarts, and calls `onSignedOut(reason)` when the pairing is over.
 */
export class Link {
  constructor(session, { extraAuth = () => ({}), onSignedOut, onConnect } = {}) {
    this.session = session;
    this.extraAuth = extraAuth;
    this.onSignedOut = onSignedOut;
    this.onConnect = onConnect;
    this.renewing = null;
    this.timer = null;
    this.socket = io({
      autoConnect: false,
      auth: (cb) => cb({ token: this.session.tokens?.accessToken, ...this.extraAuth() }),
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    const socket = this.socket;
    socket.on("connect", () => {
      setState("connected");
      this.schedule();
      this.onConnect?.();
    });
    socket.on("disconnect", (reason) => {
      setState("offline");
      // The server ended it (token expired): no automatic reconnection follows.
      if (reason === "io server disconnect") this.renewThenConnect();
    });
    socket.on("connect_error", (error) => {
      setState(socket.active ? "offline" : "connecting");
      if (socket.active) return; // the edge is unreachable: the manager retries by itself
      if (REFUSALS_TO_RENEW.has(error.message)) this.renewThenConnect();
      else if (error.message === "ORIGIN_NOT_ALLOWED") {
        say("The edge refuses this page's address (ALLOWED_ORIGINS).", "error");
      } else setTimeout(() => socket.connect(), 5000 + Math.random() * 5000);
    });
    socket.on("auth:expiring", () => this.renew());
    socket.on("auth:expired", () => this.renewThenConnect());
  }

  start() {
    setState("connecting");
    this.socket.connect();
  }

  stop() {
    clearTimeout(this.timer);
    this.socket.disconnect();
  }

  schedule() {
    clearTimeout(this.timer);
    const exp = this.session.claims?.exp;
    if (!exp) return;
    const inMs = Math.max(0, (exp - RENEW_BEFORE_S) * 1000 - Date.now());
    this.timer = setTimeout(() => this.renew(), Math.min(inMs, 2 ** 31 - 1));
  }

  /** Renew once at a time; true when the connection (if any) has the new token. */
  renew() {
    this.renewing ??= this.renewOnce().finally(() => {
      this.renewing = null;
    });
    return this.renewing;
  }

  async renewOnce() {
    for (let attempt = 0; ; attempt++) {
      try {
        await renewTokens(this.session);
        break;
      } catch (error) {
        if (error instanceof RefreshRejected) {
          this.signOut(error.message);
          return false;
        }
        // The edge is unreachable: keep the old token and try again.
        await sleep(Math.min(2000 * 2 ** attempt, 30_000));
        if (!this.session.tokens) return false;
      }
    }
    this.schedule();
    if (this.socket.connected) {
      const answer = await this.socket
        .timeout(10_000)
        .emitWithAck("auth:refresh", { accessToken: this.session.tokens.accessToken })
        .catch(() => null);
      if (answer && !answer.success) this.socket.disconnect().connect();
    }
    return true;
  }

  async renewThenConnect() {
    if (await this.renew()) {
      if (!this.socket.connected && !this.socket.active) this.socket.connect();
    }
  }

  signOut(reason) {
    this.stop();
    this.session.clear();
    setState("expired");
    this.onSignedOut?.(reason);
  }
}
