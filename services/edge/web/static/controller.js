// /controller: the scan page of one controller (SPEC 10). A keyboard-wedge scanner types the
// order id and Enter into the focused input; each scan is a `trigger` with a fresh uuid. A scan
// made while the edge is away waits in localStorage and is sent, with the same id, once the
// connection returns (the edge's idempotency makes a resend harmless). Results newest first.
import { $, Link, Session, pair, readJson, say, uuid, writeJson } from "./common.js";

const session = new Session("controller", "controller");
const QUEUE = "rd.controller.queue"; // scans without a final answer yet
const RESULTS = "rd.controller.results";
const KEEP_RESULTS = 30;
const ACK_WAIT_MS = 15_000;
const RETRY_MS = 5_000;

const form = $("[data-scan-form]");
const input = $("[data-scan-input]");
const list = $("[data-results]");
let queue = readJson(QUEUE) ?? []; // [{id, orderId, scannedAt, accepted}]
let results = readJson(RESULTS) ?? []; // [{id, orderId, code, latencyMs, note}]
const inFlight = new Set();
let link = null;

function save() {
  writeJson(QUEUE, queue);
  writeJson(RESULTS, results.slice(0, KEEP_RESULTS));
}

function row(result) {
  let item = list.querySelector(`[data-trigger-id="${CSS.escape(result.id)}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.result = "";
    item.dataset.triggerId = result.id;
    item.innerHTML =
      '<span class="order"></span><span class="code"></span><span class="latency"></span><span class="note"></span>';
    list.prepend(item);
    while (list.children.length > KEEP_RESULTS) list.lastElementChild.remove();
  }
  item.dataset.orderId = result.orderId;
  item.dataset.code = result.code;
  item.dataset.latencyMs = result.latencyMs ?? "";
  item.querySelector(".order").textContent = result.orderId;
  item.querySelector(".code").textContent = result.code;
  const at = result.scannedAt ? new Date(result.scannedAt).toLocaleTimeString() : "";
  item.querySelector(".latency").textContent =
    result.latencyMs == null ? at : `${result.latencyMs.toLocaleString()} ms · ${at}`;
  item.querySelector(".note").textContent = result.note ?? "";
}

function update(id, fields) {
  const result = results.find((r) => r.id === id);
  if (!result) return;
  Object.assign(result, fields);
  row(result);
  save();
}

function scan(raw) {
  const orderId = raw.trim();
  if (!orderId) return;
  if (orderId.length > 128) {
    say("An order id has at most 128 characters.", "error");
    return;
  }
  say("");
  const item = { id: uuid(), orderId, scannedAt: Date.now(), accepted: false };
  queue.push(item);
  const connected = link?.socket.connected;
  results.unshift({
    id: item.id,
    orderId,
    code: "PENDING",
    latencyMs: null,
    scannedAt: item.scannedAt,
    note: connected ? "sending" : "offline: kept, sent when the edge is back",
  });
  row(results[0]);
  save();
  flush();
}

/**
 * Send every queued scan that is not on its way. Accepted ones (answered PENDING) get their
 * result pushed; after a reconnect (`all`) they ask for it, as it may have come meanwhile.
 */
function flush(all = false) {
  if (!link?.socket.connected) return;
  for (const item of queue) {
    if (!inFlight.has(item.id) && (all || !item.accepted)) send(item);
  }
}

async function send(item) {
  inFlight.add(item.id);
  try {
    const answer = item.accepted
      ? await link.socket.timeout(ACK_WAIT_MS).emitWithAck("trigger:status", { id: item.id })
      : await link.socket.timeout(ACK_WAIT_MS).emitWithAck("trigger", {
          id: item.id,
          orderId: item.orderId,
          displayIndex: 0,
          // When it is sent, not when it was scanned: a scan kept offline for longer than
          // the edge's 300 s replay window must still be accepted (its id is unchanged).
          timestamp: Date.now(),
        });
    settle(answer);
  } catch {
    // No answer in time (the edge went away mid-request): it stays queued and is sent
    // again with the same id.
  } finally {
    inFlight.delete(item.id);
  }
}

function settle(answer) {
  if (!answer?.id) return;
  const item = queue.find((q) => q.id === answer.id);
  const code = answer.success ? "OK" : answer.code;
  if (code === "PENDING") {
    if (item) item.accepted = true;
    update(answer.id, { code, note: "accepted; the result follows" });
    return;
  }
  if (code === "UNKNOWN_TRIGGER" && item?.accepted === true) {
    item.accepted = false; // the edge lost track (over an hour): send it again, same id
    return;
  }
  queue = queue.filter((q) => q.id !== answer.id);
  const latencyMs = item ? Date.now() - item.scannedAt : null;
  const note = answer.success
    ? `${answer.data?.documentUrl ?? ""}${answer.duplicate ? " (again)" : ""}`
    : (answer.error ?? "");
  update(answer.id, { code, latencyMs, note });
}

async function start() {
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
  const params = session.takeFragment();
  for (const result of [...results].reverse()) row(result);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    scan(input.value);
    input.value = "";
  });
  input.addEventListener("blur", () => setTimeout(() => document.hasFocus() && input.focus(), 150));
  input.focus();
  if (!session.tokens) await pair(session);
  connect(params.get("scan"));
  setInterval(() => flush(), RETRY_MS);
}

function connect(firstScan) {
  $("[data-target-screen]").textContent = session.claims?.screenId ?? "";
  let pendingFirst = firstScan && results.length === 0 ? firstScan : null;
  link = new Link(session, {
    onConnect: () => {
      flush(true);
      if (pendingFirst) {
        scan(pendingFirst);
        pendingFirst = null;
      }
    },
    onSignedOut: async (reason) => {
      say(`This controller was signed out (${reason}). Pair it again.`, "error");
      await pair(session);
      connect(null);
    },
  });
  link.socket.on("trigger:result", settle);
  link.start();
  input.focus();
}

start();
