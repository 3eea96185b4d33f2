// /operator (role admin): the whole store at a glance, live (SPEC 10, issue 16). On each
// connect the page subscribes (`operator:subscribe`) and draws the snapshot it gets; the edge
// then pushes the sections that changed (`operator:update`) every couple of seconds. Actions
// (redrive, show, resend) are Socket.IO calls with an ack; approvals are POST /api/pair/approve.
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { $, Link, RefreshRejected, Session, pair, renewTokens, say } from "./common.js";

const session = new Session("operator", "admin");
const form = $("[data-approve-form]");
const dashboard = $("[data-dashboard]");
const dialog = $("[data-entry-dialog]");
let link = null;
let view = null; // the last snapshot, with updates applied
let skewMs = 0; // the edge's clock minus ours (ages are computed against the edge's)
let chart = null;
let shownEntry = null; // the dead letter open in the dialog: {id, partition}

// -- small DOM helpers (text only: nothing from the store is parsed as HTML) -------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name === "title" || name === "href" || name === "type") node.setAttribute(name, value === true ? "" : String(value));
    else node[name] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replaceRows(body, rows) {
  body.replaceChildren(...rows);
}

const now = () => Date.now() + skewMs;

/** A span of time as people read it: "42 s", "7 min", "3 h 12 min", "2 d 5 h". */
function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const ago = (at) => (at === null || at === undefined ? "–" : `${duration(now() - at)} ago`);
const uptime = (startedAt) => (startedAt ? duration(now() - startedAt) : "–");

const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
const plural = (n, word, words = `${word}s`) => `${count(n)} ${n === 1 ? word : words}`;
const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());

// -- drawing the sections ------------------------------------------------------------------

function drawScreens() {
  const screens = view.screens ?? [];
  const counts = view.screenCounts ?? { known: screens.length, online: screens.filter((s) => s.online).length };
  const listed = counts.known > screens.length ? ` (the first ${screens.length} listed)` : "";
  $("[data-screens-summary]").textContent = `${count(counts.online)} of ${count(counts.known)} online${listed}`;
  $("[data-screens-empty]").hidden = screens.length > 0;
  replaceRows(
    $("[data-screens]"),
    screens.map((s) => {
      const ack = s.displayStatus
        ? el("span", { class: `ack ${s.displayStatus}` }, s.displayStatus, s.displayError ? el("span", { class: "reason" }, ` · ${s.displayError}`) : null, el("span", { class: "when" }, ` ${ago(s.displayAckedAt)}`))
        : el("span", { class: "muted" }, s.eventId ? "not acknowledged yet" : "–");
      const shows = s.eventId
        ? el("span", {}, el("strong", {}, s.orderId ?? "?"), " ", linkable(s.documentUrl) ? el("a", { href: s.documentUrl, class: "doc", title: s.documentUrl, target: "_blank", rel: "noopener" }, shortUrl(s.documentUrl)) : s.documentUrl ? el("span", { class: "muted" }, s.documentUrl) : null)
        : el("span", { class: "muted" }, "nothing yet");
      return el(
        "tr",
        { "data-screen-id": s.screenId, "data-online": String(Boolean(s.online)), "data-event-id": s.eventId ?? "" },
        el("td", { class: "id" }, s.screenId),
        el("td", {}, el("span", { class: `pill ${s.online ? "on" : "off"}` }, s.online ? "online" : "offline"), s.online ? null : el("span", { class: "when" }, ` seen ${ago(s.lastSeen)}`)),
        el("td", {}, shows),
        el("td", { class: "when" }, s.projectedAt ? ago(s.projectedAt) : "–"),
        el("td", {}, ack),
        el("td", { class: "actions" }, s.eventId ? el("button", { type: "button", class: "small secondary", "data-action": "resend", "data-screen": s.screenId, disabled: !s.online, title: s.online ? "send its current display again" : "offline: it gets its display when it reconnects" }, "Re-send") : null),
      );
    }),
  );
}

/** Only http(s) documents become links (the CSP would stop a javascript: URL anyway). */
function linkable(url) {
  try {
    return ["http:", "https:"].includes(new URL(url, location.href).protocol);
  } catch {
    return false;
  }
}

function shortUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    const name = parsed.pathname.split("/").pop() || parsed.pathname;
    return parsed.origin === location.origin ? name : `${parsed.host}/…/${name}`;
  } catch {
    return url;
  }
}

function drawDeadLetters() {
  const rows = view.deadLetters ?? [];
  const total = (view.streams ?? []).reduce((sum, s) => sum + (s.deadLetter ?? 0), 0);
  $("[data-dead-empty]").hidden = rows.length > 0;
  $("[data-action=redrive-all]").hidden = rows.length === 0;
  $("[data-dead-summary]").textContent = rows.length ? (total > rows.length ? `newest ${rows.length} of ${count(total)}` : plural(total, "entry", "entries")) : "";
  replaceRows(
    $("[data-dead-letters]"),
    rows.map((d) =>
      el(
        "tr",
        { "data-dead-letter-id": d.id, "data-partition": d.partition },
        el("td", { class: "id" }, d.id, (view.streams ?? []).length > 1 ? el("span", { class: "muted" }, ` · p${d.partition}`) : null),
        el("td", {}, el("strong", {}, d.orderId ?? "?"), el("span", { class: "muted" }, ` → ${d.screenId ?? "?"}`), d.type && d.type !== "trigger" ? el("span", { class: "muted" }, ` (${d.type})`) : null),
        el("td", {}, el("span", { class: "reason-name" }, d.reason ?? "?"), d.deliveries ? el("span", { class: "muted" }, ` after ${d.deliveries}`) : null, d.error ? el("div", { class: "error", title: d.error }, d.error) : null),
        el("td", { class: "when" }, ago(d.failedAt)),
        el("td", { class: "actions" }, el("button", { type: "button", class: "small secondary", "data-action": "show", "data-id": d.id, "data-partition": d.partition }, "Show"), el("button", { type: "button", class: "small", "data-action": "redrive", "data-id": d.id, "data-partition": d.partition, disabled: busy.has(`${d.partition}/${d.id}`) }, "Redrive")),
      ),
    ),
  );
}

function drawStreams() {
  replaceRows(
    $("[data-streams]"),
    (view.streams ?? []).map((s) =>
      el("tr", {}, el("td", {}, s.partition), el("td", { class: "id" }, s.stream), el("td", { class: "num" }, count(s.lag)), el("td", { class: "num" }, count(s.pending)), el("td", { class: `num ${s.deadLetter ? "bad" : ""}` }, count(s.deadLetter))),
    ),
  );
}

function circuitsOf(workers) {
  const states = {};
  for (const w of workers) for (const [name, state] of Object.entries(w.circuits ?? {})) (states[name] ??= []).push(state);
  return states;
}

function drawProcesses() {
  const edges = view.edges ?? [];
  const workers = view.workers ?? [];
  replaceRows($("[data-processes]"), [
    ...edges.map((e) => el("tr", {}, el("td", {}, "edge"), el("td", { class: "id" }, e.id), el("td", {}, uptime(e.startedAt)), el("td", { class: "muted" }, `${plural(e.connections, "connection")} · ${plural(e.screens, "screen")}`))),
    ...workers.map((w) => {
      const circuits = Object.entries(w.circuits ?? {}).map(([name, state]) => el("span", { class: `pill ${state === "closed" ? "on" : state === "open" ? "off" : "half"}` }, `${name} ${state}`));
      const parts = w.partitions ? `partitions ${w.partitions.join(", ")}` : "";
      return el("tr", {}, el("td", {}, "worker"), el("td", { class: "id" }, w.id), el("td", {}, uptime(w.startedAt)), el("td", { class: "muted" }, parts, " ", circuits));
    }),
  ]);
}

function drawApprovals() {
  const waiting = view.approvals ?? [];
  $("[data-approvals-empty]").hidden = waiting.length > 0;
  replaceRows(
    $("[data-approvals]"),
    waiting.map((a) => {
      const left = Math.max(0, Math.round((a.expiresAt - now()) / 60000));
      const hint = a.codeHint.padEnd(8, "·");
      return el(
        "li",
        { "data-waiting-code": a.codeHint, "data-role": a.role },
        el("code", { class: "code", title: "read the rest of the code off the device" }, hint),
        el("span", { class: `role ${a.role === "admin" ? "admin" : ""}` }, a.role),
        el("span", { class: "muted" }, `from ${a.address || "?"} · asked ${ago(a.requestedAt)} · expires in ${left} min`),
        el("button", { type: "button", class: "small secondary", "data-action": "use-code", "data-code": a.codeHint }, "Approve…"),
      );
    }),
  );
}

function drawTiles() {
  const screens = view.screens ?? [];
  const streams = view.streams ?? [];
  const sum = (name) => (streams.some((s) => s[name] === null || s[name] === undefined) ? null : streams.reduce((t, s) => t + s[name], 0));
  const counts = view.screenCounts ?? { known: screens.length, online: screens.filter((s) => s.online).length };
  tile("screens", `${count(counts.online)} / ${count(counts.known)}`, counts.online < counts.known ? "warn" : "ok");
  tile("lag", count(sum("lag")), sum("lag") > 1000 ? "warn" : "ok");
  tile("pending", count(sum("pending")), "ok");
  tile("dead", count(sum("deadLetter")), sum("deadLetter") ? "bad" : "ok");
  const workers = (view.workers ?? []).length;
  tile("workers", `${workers} · ${(view.edges ?? []).length}`, workers ? "ok" : "bad");
  const circuits = circuitsOf(view.workers ?? []);
  const all = Object.values(circuits).flat();
  const worst = all.includes("open") ? "open" : all.includes("half_open") ? "half open" : all.length ? "closed" : "–";
  tile("circuits", worst, worst === "open" ? "bad" : worst === "half open" ? "warn" : "ok");
}

function tile(name, value, tone) {
  const node = $(`[data-tile="${name}"]`);
  node.dataset.tone = tone;
  $(".value", node).textContent = value;
}

// -- the chart (uPlot) -------------------------------------------------------------------------

const SERIES = [
  { key: "projected", label: "projected /s", stroke: "#1a7f37", fill: "rgba(26,127,55,0.08)" },
  { key: "rejected", label: "rejected /s", stroke: "#b7791f" },
  { key: "dead_lettered", label: "dead-lettered /s", stroke: "#c62828" },
];

function chartData() {
  const points = view.chart ?? [];
  return [points.map((p) => p.t), ...SERIES.map((s) => points.map((p) => p[s.key])), points.map((p) => p.p95)];
}

function drawChart() {
  const box = $("[data-chart]");
  const data = chartData();
  const points = view.chart ?? [];
  const recent = points.slice(-60);
  const total = recent.reduce((t, p) => t + p.projected + p.rejected + p.dead_lettered, 0);
  const rate = recent.length ? total / recent.length : 0;
  const p95s = recent.map((p) => p.p95).filter((v) => v !== null);
  const pace = rate >= 1 ? ` (${rate.toFixed(1)}/s)` : "";
  $("[data-chart-summary]").textContent = `last minute: ${plural(total, "trigger")}${pace}${p95s.length ? ` · worst ack p95 ${Math.max(...p95s)} ms` : ""}`;
  if (chart) {
    chart.setData(data);
    return;
  }
  chart = new uPlot(
    {
      width: Math.max(320, box.clientWidth),
      height: 220,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, n: { range: (_u, _min, max) => [0, Math.max(5, max * 1.15)] }, ms: { range: (_u, _min, max) => [0, Math.max(50, (max ?? 0) * 1.15)] } },
      axes: [
        { stroke: "#5b6875", grid: { stroke: "#eef1f4" }, space: 90, values: (_u, splits) => splits.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })) },
        { scale: "n", label: "triggers /s", stroke: "#5b6875", grid: { stroke: "#eef1f4" }, size: 56 },
        { scale: "ms", side: 1, label: "ack p95 (ms)", stroke: "#1f6feb", grid: { show: false }, size: 60 },
      ],
      series: [
        { label: "time" },
        ...SERIES.map((s) => ({ label: s.label, scale: "n", stroke: s.stroke, fill: s.fill, width: 1.6, points: { show: false } })),
        { label: "ack p95 ms", scale: "ms", stroke: "#1f6feb", width: 1.4, dash: [5, 4], spanGaps: true, points: { show: false } },
      ],
    },
    data,
    box,
  );
  new ResizeObserver(() => chart.setSize({ width: Math.max(320, box.clientWidth), height: 220 })).observe(box);
}

// -- applying the feed -------------------------------------------------------------------------

const DRAW = { screens: [drawScreens, drawTiles], screenCounts: [drawScreens, drawTiles], deadLetters: [drawDeadLetters, drawTiles], streams: [drawStreams, drawDeadLetters, drawTiles], edges: [drawProcesses, drawTiles], workers: [drawProcesses, drawTiles], approvals: [drawApprovals], chart: [drawChart] };

function applySnapshot(snapshot) {
  view = snapshot;
  skewMs = snapshot.at - Date.now();
  dashboard.hidden = false;
  drawAll();
}

function drawAll() {
  drawTiles();
  drawScreens();
  drawDeadLetters();
  drawStreams();
  drawProcesses();
  drawApprovals();
  drawChart();
  $("[data-updated]").textContent = `updated ${clock(view.at)}`;
}

function applyUpdate(update) {
  if (!view) return;
  skewMs = update.at - Date.now();
  view.at = update.at;
  const redraw = new Set();
  for (const [name, value] of Object.entries(update)) {
    if (name === "at") continue;
    if (name === "chart") {
      // The edge sends its last seconds again each tick: a late event lands in its second.
      const fresh = new Map(value.map((p) => [p.t, p]));
      const kept = view.chart.filter((p) => !fresh.has(p.t));
      view.chart = [...kept, ...value].sort((a, b) => a.t - b.t).slice(-300);
    } else view[name] = value;
    for (const draw of DRAW[name] ?? []) redraw.add(draw);
  }
  for (const draw of redraw) draw();
  $("[data-updated]").textContent = `updated ${clock(view.at)}`;
}

async function subscribe() {
  const answer = await link.socket.timeout(15_000).emitWithAck("operator:subscribe", {}).catch(() => null);
  if (!answer) {
    say("The edge did not answer the subscription; retrying.", "error");
    setTimeout(() => link.socket.connected && subscribe(), 3000);
    return;
  }
  if (!answer.success) {
    say(`The operator's view was refused: ${answer.error ?? answer.code}.`, "error");
    // FORBIDDEN is final; anything else (the store did not answer) is worth another try.
    if (answer.code !== "FORBIDDEN") setTimeout(() => link.socket.connected && subscribe(), 3000);
    return;
  }
  say("");
  applySnapshot(answer.snapshot);
}

async function call(event, payload) {
  const answer = await link.socket.timeout(20_000).emitWithAck(event, payload).catch(() => null);
  if (!answer) throw new Error("the edge did not answer");
  if (!answer.success) throw new Error(answer.error ?? answer.code);
  return answer;
}

// -- actions -------------------------------------------------------------------------------------

const busy = new Set(); // `${partition}/${id}` of redrives in flight: their buttons stay disabled

async function redrive(id, partition) {
  const key = `${partition}/${id}`;
  busy.add(key);
  try {
    const answer = await call("operator:redrive", { id, partition });
    view.deadLetters = (view.deadLetters ?? []).filter((d) => !(d.id === id && d.partition === partition));
    drawDeadLetters();
    say(answer.redriven.length ? `Redriven ${id}: the worker processes it again.` : `${id} was already redriven or purged.`, "ok");
  } finally {
    busy.delete(key);
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const { action } = button.dataset;
  const partition = button.dataset.partition === undefined ? undefined : Number(button.dataset.partition);
  try {
    if (action === "redrive") {
      button.disabled = true;
      await redrive(button.dataset.id, partition);
    } else if (action === "redrive-all") {
      if (!confirm("Put every dead-letter entry back on the triggers stream?")) return;
      button.disabled = true;
      try {
        const answer = await call("operator:redrive", { all: true });
        const moved = new Set(answer.redriven.map((r) => `${r.partition}/${r.id}`));
        view.deadLetters = (view.deadLetters ?? []).filter((d) => !moved.has(`${d.partition}/${d.id}`));
        drawDeadLetters();
        const gone = answer.missing ? ` (${answer.missing} were already gone)` : "";
        const more = answer.remaining ? ` ${count(answer.remaining)} remain: Redrive all again.` : "";
        say(`Redriven ${plural(answer.redriven.length, "entry", "entries")}${gone}.${more}`, "ok");
      } finally {
        button.disabled = false;
      }
    } else if (action === "show") {
      const answer = await call("operator:dead-letter", { id: button.dataset.id, partition });
      shownEntry = { id: button.dataset.id, partition };
      $("[data-entry-id]").textContent = button.dataset.id;
      $("[data-entry-body]").textContent = JSON.stringify(answer.entry, null, 2);
      dialog.showModal();
    } else if (action === "close-dialog") {
      dialog.close();
    } else if (action === "redrive-shown" && shownEntry) {
      dialog.close();
      await redrive(shownEntry.id, shownEntry.partition);
    } else if (action === "resend") {
      await call("operator:resend", { screenId: button.dataset.screen });
      say(`Sent screen ${button.dataset.screen} its current display again.`, "ok");
    } else if (action === "use-code") {
      // Only the code's first characters are listed: the rest is read off the device.
      const input = form.elements.code;
      input.value = button.dataset.code;
      input.focus();
      input.setSelectionRange(input.value.length, input.value.length);
      form.scrollIntoView({ behavior: "smooth", block: "center" });
    }
  } catch (error) {
    say(`${action}: ${error.message}`, "error");
    button.disabled = false;
  }
});

async function approve(code, screenId, userId) {
  const body = { code, screenId, ...(userId ? { userId } : {}) };
  const post = () =>
    fetch("/api/pair/approve", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Authorization: `Bearer ${session.tokens.accessToken}`,
      },
      body: JSON.stringify(body),
      cache: "no-store",
    });
  let response = await post();
  if (response.status === 401) {
    await renewTokens(session); // an expired access token: renew once and try again
    response = await post();
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error ?? `HTTP ${response.status}`);
  return answer;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const code = String(data.get("code") ?? "").trim().toUpperCase().replace(/[\s-]/g, "");
  const screenId = String(data.get("screenId") ?? "").trim();
  const userId = String(data.get("userId") ?? "").trim();
  try {
    const answer = await approve(code, screenId, userId);
    const role = answer.role === "controller" ? "A controller, driving" : `A ${answer.role ?? "device"}:`;
    say(`Paired (code ${code}). ${role} screen ${answer.screenId ?? screenId}.`, "ok");
    form.reset();
    if (view) {
      view.approvals = (view.approvals ?? []).filter((a) => a.code !== code);
      drawApprovals();
    }
  } catch (error) {
    if (error instanceof RefreshRejected) link?.signOut(error.message);
    else say(`Not approved: ${error.message}`, "error");
  }
});

// -- start ---------------------------------------------------------------------------------------

async function start() {
  session.takeFragment();
  if (!session.tokens) await pair(session);
  connect();
}

function connect() {
  $("[data-operator-name]").textContent = session.claims?.userId ?? "";
  link = new Link(session, {
    onConnect: () => subscribe(), // every (re)connect: a fresh snapshot
    onSignedOut: async (reason) => {
      dashboard.hidden = true;
      say(`Signed out (${reason}). Pair this page again, or open a link from rdisplay token issue --role admin --url.`, "error");
      await pair(session);
      connect();
    },
  });
  link.socket.on("operator:update", applyUpdate);
  link.start();
}

// Ages ("12 s ago") move on between updates.
setInterval(() => {
  if (!view) return;
  drawScreens();
  drawProcesses();
  drawApprovals();
}, 5000);

start();
