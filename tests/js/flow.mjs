// The core Socket.IO flow (SPEC section 4) driven by the official JavaScript client.
//
// Input: one JSON object, in argv[2] or else in the FLOW_INPUT environment variable:
//   {
//     "url": "http://127.0.0.1:PORT",
//     "tokens": {"controller": JWT, "screen": JWT, "expired": JWT, "refreshAsAccess": JWT},
//     "trigger": {"id": uuid, "orderId": str, "displayIndex": int, "timestamp": ms},
//     "timeoutMs": 30000          // optional: overall deadline of the script
//   }
// Output: one JSON line on stdout, exit code 0. Any unexpected failure (a connection that does
// not open, an ack that never comes, the overall deadline) is a message on stderr and a
// non-zero exit code; the script never hangs.
import { randomUUID } from "node:crypto";
import { io } from "socket.io-client";

const STEP_TIMEOUT_MS = 10_000;

function fail(message, code = 1) {
  process.stderr.write(`flow.mjs: ${message}\n`);
  process.exit(code);
}

function readInput() {
  const text = process.argv[2] ?? process.env.FLOW_INPUT;
  if (!text) fail("no input: pass a JSON object as argv[2] or in FLOW_INPUT", 2);
  try {
    return JSON.parse(text);
  } catch (err) {
    return fail(`the input is not JSON: ${err.message}`, 2);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sockets = [];

function open(url, options) {
  const socket = io(url, { reconnection: false, forceNew: true, timeout: 5_000, ...options });
  sockets.push(socket);
  return socket;
}

// Resolves once connected; a connect_error rejects with the server's message.
function connected(socket, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", (err) => {
        reject(new Error(`${what}: connect_error ${err.message}`));
      });
    }),
    STEP_TIMEOUT_MS,
    `${what} connect`,
  );
}

// The transport an engine opened on (on loopback an upgrade may finish before `connect`);
// null when the engine closed without opening.
function openedOn(socket, what) {
  const engine = socket.io.engine;
  return withTimeout(
    new Promise((resolve) => {
      engine.once("open", () => resolve(engine.transport.name));
      engine.once("close", () => resolve(null));
    }),
    STEP_TIMEOUT_MS,
    `${what} engine open`,
  );
}

// Resolves with the connect_error of a connection the server must refuse.
async function refusal(url, options, what) {
  const socket = open(url, options);
  const transport = openedOn(socket, what);
  const refused = await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => reject(new Error(`${what}: connected, expected a refusal`)));
      socket.once("connect_error", (err) => {
        resolve({ message: err.message, data: err.data ?? null });
      });
    }),
    STEP_TIMEOUT_MS,
    `${what} refusal`,
  ).finally(() => socket.disconnect());
  return { ...refused, transportAtOpen: await transport };
}

async function core(input) {
  const { url, tokens, trigger } = input;
  const result = { scenario: "core" };

  // A screen over websocket only; it answers every `display` through the ack callback.
  const displays = [];
  let displayWaiter = null;
  const screen = open(url, { auth: { token: tokens.screen }, transports: ["websocket"] });
  screen.on("display", (payload, callback) => {
    displays.push({ payload, hadCallback: typeof callback === "function" });
    if (typeof callback === "function") callback({ status: "shown" });
    displayWaiter?.();
  });

  // A controller with the default transports: HTTP long-polling first, then the upgrade.
  const controller = open(url, { auth: { token: tokens.controller } });
  const controllerOpenedOn = openedOn(controller, "controller");
  const upgraded = withTimeout(
    new Promise((resolve) => controller.io.engine.once("upgrade", (t) => resolve(t.name))),
    STEP_TIMEOUT_MS,
    "controller upgrade",
  );

  await Promise.all([connected(screen, "screen"), connected(controller, "controller")]);
  result.screen = { id: screen.id, transport: screen.io.engine.transport.name };
  result.controller = {
    id: controller.id,
    transportAtOpen: await controllerOpenedOn,
    upgradedTo: await upgraded,
    transport: controller.io.engine.transport.name,
  };

  const emit = (payload) => controller.timeout(STEP_TIMEOUT_MS).emitWithAck("trigger", payload);

  result.first = await emit(trigger);

  await withTimeout(
    new Promise((resolve) => {
      if (displays.length > 0) resolve();
      else displayWaiter = resolve;
    }),
    STEP_TIMEOUT_MS,
    "screen display",
  );
  result.repeat = await emit(trigger);

  result.invalidSent = { ...trigger, id: randomUUID(), color: "red" };
  result.invalid = await emit(result.invalidSent);

  // Every display the screen got so far (a resend would show up here as a second entry).
  result.displays = displays;

  result.refusals = {
    expiredWebsocket: await refusal(
      url,
      { auth: { token: tokens.expired }, transports: ["websocket"] },
      "expired token (websocket)",
    ),
    expiredPolling: await refusal(
      url,
      { auth: { token: tokens.expired } },
      "expired token (polling)",
    ),
    missingWebsocket: await refusal(url, { transports: ["websocket"] }, "no token (websocket)"),
    missingPolling: await refusal(url, {}, "no token (polling)"),
    refreshAsAccess: await refusal(
      url,
      { auth: { token: tokens.refreshAsAccess }, transports: ["websocket"] },
      "refresh token as access token",
    ),
  };
  return result;
}

const SCENARIOS = { core };

async function main() {
  const input = readInput();
  const deadline = setTimeout(
    () => fail(`overall timeout of ${input.timeoutMs ?? 30_000} ms exceeded`, 3),
    input.timeoutMs ?? 30_000,
  );
  const scenario = SCENARIOS[input.scenario ?? "core"];
  if (!scenario) fail(`unknown scenario ${JSON.stringify(input.scenario)}`, 2);
  const started = Date.now();
  const result = await scenario(input);
  result.elapsedMs = Date.now() - started;
  for (const socket of sockets) socket.disconnect();
  clearTimeout(deadline);
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

main().catch((err) => fail(err?.stack ?? String(err)));
