// The devices' service worker (/sw.js): a screen that keeps showing, a controller that keeps
// scanning. /screen, /controller and their assets of this build are cached on install;
// documents go to the network first and fall back to the copies the screen kept (Cache API,
// the last few), so a kiosk that reloads while the edge is unreachable still shows its last
// document, and a controller reloaded offline still takes scans into its queue.
const ASSETS = "{{assets}}";
const SHELL = `rd-shell-${ASSETS.split("/").pop()}`;
const DOCUMENTS = "rd-documents";
const NETWORK_WAIT_MS = 4000;
const PAGES = new Set(["/screen", "/controller"]);
const PRECACHE = [
  ...PAGES,
  `${ASSETS}/icon.svg`,
  `${ASSETS}/controller.js`,
  `${ASSETS}/style.css`,
  `${ASSETS}/common.js`,
  `${ASSETS}/screen.js`,
  `${ASSETS}/vendor/socket.io.esm.min.js`,
  `${ASSETS}/vendor/pdfjs/pdf.min.mjs`,
  `${ASSETS}/vendor/pdfjs/pdf.worker.min.mjs`,
  `${ASSETS}/vendor/pdfjs/standard_fonts/LiberationSans-Regular.ttf`,
  `${ASSETS}/vendor/pdfjs/standard_fonts/LiberationSans-Bold.ttf`,
  `${ASSETS}/vendor/pdfjs/standard_fonts/LiberationSans-Italic.ttf`,
  `${ASSETS}/vendor/pdfjs/standard_fonts/LiberationSans-BoldItalic.ttf`,
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(SHELL)
      .then((cache) => cache.addAll(PRECACHE))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) =>
        Promise.all(
          names.filter((n) => n.startsWith("rd-shell-") && n !== SHELL).map((n) => caches.delete(n)),
        ),
      )
      .then(() => self.clients.claim()),
  );
});

/** The network, unless it takes too long and a cached copy exists; then the copy. */
async function networkFirst(request, cacheName) {
  const cache = await caches.open(cacheName);
  const cached = await cache.match(request, { ignoreSearch: request.mode === "navigate" });
  const network = fetch(request).then(async (response) => {
    if (response.ok && cacheName === SHELL) await cache.put(request, response.clone());
    return response;
  });
  if (!cached) return network;
  const late = new Promise((resolve) => setTimeout(() => resolve(cached), NETWORK_WAIT_MS));
  return Promise.race([network.catch(() => cached), late]);
}

async function cacheFirst(request) {
  const cache = await caches.open(SHELL);
  const cached = await cache.match(request);
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok) await cache.put(request, response.clone());
  return response;
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  const own = url.origin === self.location.origin;
  if (own && (url.pathname.startsWith("/socket.io/") || url.pathname.startsWith("/api/"))) return;
  if (own && PAGES.has(url.pathname)) {
    event.respondWith(networkFirst(request, SHELL));
  } else if (own && url.pathname.startsWith(ASSETS + "/")) {
    event.respondWith(cacheFirst(request));
  } else if (!own || url.pathname.startsWith("/documents/")) {
    event.respondWith(networkFirst(request, DOCUMENTS));
  }
});
