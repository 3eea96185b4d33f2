// /screen: the kiosk page of one screen (SPEC 10). It shows the current display full screen
// (images in an <img>, PDFs rendered by pdf.js, anything else in an <iframe>), acks `shown`
// once it is on screen or `failed` with a reason, and keeps showing it while the edge is away.
import { $, Link, Session, compareIds, pair, readJson, say, setState, writeJson } from "./common.js";

const session = new Session("screen", "screen");
const CURRENT = "rd.screen.current"; // {eventId, documentUrl, orderId, status}
const SHOWN = "rd.screen.lastEventId"; // the newest eventId this screen acked `shown`
const DOCUMENTS_CACHE = "rd-documents";
const KEEP_DOCUMENTS = 5;
const RENDER_TIMEOUT_MS = 20_000;
const IMAGE = /\.(png|jpe?g|gif|webp|avif|svg|bmp)$/i;

const stage = $("[data-stage]");
const failure = $("[data-failure]");
let shown = readJson(CURRENT); // what is on screen now
let rendering = null; // {eventId, promise} of the display being prepared
let generation = 0;

function kindOf(url) {
  const path = new URL(url, location.href).pathname;
  if (/\.pdf$/i.test(path)) return "pdf";
  if (IMAGE.test(path)) return "image";
  return "frame";
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Why `url` failed to load, as far as the page may know (a cross-origin answer is opaque). */
async function reasonFor(url, fallback) {
  const target = new URL(url, location.href);
  if (target.origin !== location.origin) return fallback;
  try {
    const response = await fetch(target, { method: "HEAD", cache: "no-store" });
    if (!response.ok) return `HTTP ${response.status} for ${target.pathname}`;
  } catch {
    // offline and not cached
  }
  return fallback;
}

let pdfjs = null;
async function loadPdfjs() {
  if (!pdfjs) {
    pdfjs = await import("./vendor/pdfjs/pdf.min.mjs");
    pdfjs.GlobalWorkerOptions.workerSrc = new URL(
      "./vendor/pdfjs/pdf.worker.min.mjs",
      import.meta.url,
    ).href;
  }
  return pdfjs;
}

async function renderPdf(layer, url) {
  const lib = await loadPdfjs();
  const task = lib.getDocument({
    url: new URL(url, location.href).href,
    isEvalSupported: false,
    enableXfa: false,
    disableRange: true, // one whole response: what the offline cache keeps
    disableStream: true,
    standardFontDataUrl: new URL("./vendor/pdfjs/standard_fonts/", import.meta.url).href,
    cMapUrl: new URL("./vendor/pdfjs/cmaps/", import.meta.url).href, // CJK text
    cMapPacked: true,
    wasmUrl: new URL("./vendor/pdfjs/wasm/", import.meta.url).href, // scanned images
    iccUrl: new URL("./vendor/pdfjs/iccs/", import.meta.url).href,
  });
  let doc;
  try {
    doc = await task.promise;
  } catch (error) {
    if (error?.status) throw new Error(`HTTP ${error.status} for ${new URL(url, location.href).pathname}`);
    throw new Error(error?.message || "the PDF could not be read");
  }
  const page = await doc.getPage(1);
  const canvas = document.createElement("canvas");
  layer.append(canvas);
  const draw = async () => {
    const base = page.getViewport({ scale: 1 });
    const scale = Math.min(innerWidth / base.width, innerHeight / base.height);
    const viewport = page.getViewport({ scale });
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.floor(viewport.width * ratio);
    canvas.height = Math.floor(viewport.height * ratio);
    canvas.style.width = `${Math.floor(viewport.width)}px`;
    canvas.style.height = `${Math.floor(viewport.height)}px`;
    const transform = ratio === 1 ? undefined : [ratio, 0, 0, ratio, 0, 0];
    await page.render({ canvas, viewport, transform }).promise;
  };
  await draw();
  layer.redraw = draw;
  layer.release = () => doc.destroy();
}

async function renderImage(layer, url) {
  const image = new Image();
  image.alt = "";
  image.decoding = "async";
  const loaded = new Promise((resolve, reject) => {
    image.onload = resolve;
    image.onerror = () => reject(new Error("the image did not load"));
  });
  image.src = url;
  layer.append(image);
  try {
    await loaded;
  } catch (error) {
    throw new Error(await reasonFor(url, error.message));
  }
}

async function renderFrame(layer, url) {
  const target = new URL(url, location.href);
  if (target.origin === location.origin) {
    const reason = await reasonFor(url, null);
    if (reason) throw new Error(reason);
  }
  const frame = document.createElement("iframe");
  frame.title = "document";
  frame.referrerPolicy = "no-referrer";
  const loaded = new Promise((resolve) => frame.addEventListener("load", resolve, { once: true }));
  frame.src = target.href;
  layer.append(frame);
  await loaded; // a cross-origin frame says nothing more: loaded is all the page can know
}

const RENDERERS = { pdf: renderPdf, image: renderImage, frame: renderFrame };

/** Prepare `display` off screen, then swap it in; the old document stays until then. */
async function show(display) {
  const mine = ++generation;
  const layer = document.createElement("div");
  layer.className = "layer preparing";
  stage.append(layer);
  try {
    await withTimeout(
      RENDERERS[kindOf(display.documentUrl)](layer, display.documentUrl),
      RENDER_TIMEOUT_MS,
      "rendering",
    );
  } catch (error) {
    layer.release?.();
    layer.remove();
    if (mine !== generation) return { status: "failed", error: "superseded by a newer display" };
    clearStage();
    showFailure(display, error.message);
    return { status: "failed", error: error.message };
  }
  if (mine !== generation) {
    layer.release?.();
    layer.remove();
    return { status: "failed", error: "superseded by a newer display" };
  }
  clearStage(layer);
  layer.classList.remove("preparing");
  failure.hidden = true;
  setShown(display, "shown");
  localStorage.setItem(SHOWN, display.eventId);
  remember(display.documentUrl);
  return { status: "shown" };
}

function clearStage(keep = null) {
  for (const old of [...stage.children]) {
    if (old === keep) continue;
    old.release?.();
    old.remove();
  }
}

function showFailure(display, reason) {
  $("[data-failure-order]").textContent = display.orderId ?? "";
  $("[data-failure-reason]").textContent = reason;
  failure.hidden = false;
  setShown(display, "failed");
}

function setShown(display, status) {
  shown = {
    eventId: display.eventId,
    documentUrl: status === "shown" ? display.documentUrl : "",
    orderId: display.orderId,
    status,
    sourceUrl: display.documentUrl,
  };
  writeJson(CURRENT, shown);
  document.body.dataset.eventId = shown.eventId ?? "";
  document.body.dataset.documentUrl = shown.documentUrl;
  document.body.dataset.display = status;
}

/** Keep the last documents in the Cache API, for a reload while the edge is unreachable. */
async function remember(url) {
  if (!("caches" in window)) return; // not a secure context: the service worker is off too
  try {
    const cache = await caches.open(DOCUMENTS_CACHE);
    const request = new Request(new URL(url, location.href), { cache: "no-cache" });
    const target = new URL(request.url);
    if (target.origin === location.origin) await cache.add(request);
    else await cache.put(request, await fetch(request, { mode: "no-cors" }));
    const keys = await cache.keys();
    for (const old of keys.slice(0, Math.max(0, keys.length - KEEP_DOCUMENTS))) {
      await cache.delete(old);
    }
  } catch {
    // the cache is a convenience: a full quota must not fail a display
  }
}

/** A `display` from the edge; the same eventId again (a resend) does not render again. */
function onDisplay(display, ack) {
  const reply = typeof ack === "function" ? ack : () => {};
  if (shown?.eventId === display.eventId && shown.status === "shown") {
    reply({ status: "shown" });
    return;
  }
  if (rendering?.eventId === display.eventId) {
    rendering.promise.then(reply);
    return;
  }
  if (shown?.eventId && shown.status === "shown" && compareIds(display.eventId, shown.eventId) < 0) {
    reply({ status: "failed", error: `superseded by ${shown.eventId}` });
    return;
  }
  const promise = show(display);
  rendering = { eventId: display.eventId, promise };
  promise.then((result) => {
    if (rendering?.promise === promise) rendering = null;
    reply(result);
  });
}

function restore() {
  // What this screen showed before a reload: on screen at once, from the cache when offline.
  if (!shown?.eventId) return;
  if (shown.status === "shown" && shown.documentUrl) {
    const previous = { ...shown, documentUrl: shown.sourceUrl ?? shown.documentUrl };
    shown = null;
    onDisplay(previous, (result) => {
      if (result.status !== "shown") say("The last document could not be shown again.", "error");
    });
  } else if (shown.status === "failed") {
    showFailure(shown, "it could not be shown before this page was reloaded");
  }
}

let resizeTimer;
addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const layer of stage.children) layer.redraw?.().catch(() => {});
  }, 250);
});

async function start() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").catch(() => {});
  }
  session.takeFragment();
  restore();
  if (!session.tokens) await pair(session);
  connect();
}

function connect() {
  const screenId = session.claims?.screenId ?? "";
  $("[data-screen-name]").textContent = screenId;
  const link = new Link(session, {
    extraAuth: () => {
      const last = localStorage.getItem(SHOWN);
      return last ? { lastEventId: last } : {};
    },
    onSignedOut: async (reason) => {
      say(`This screen was signed out (${reason}). Pair it again.`, "error");
      localStorage.removeItem(SHOWN);
      await pair(session);
      connect();
    },
  });
  link.socket.on("display", onDisplay);
  link.start();
}

start();
