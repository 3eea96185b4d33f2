// /demo (development only): a paired screen and controller side by side, and a first scan.
import { $, say, setState } from "./common.js";

function fragment(pair, extra = {}) {
  const params = new URLSearchParams({ access: pair.accessToken, refresh: pair.refreshToken, ...extra });
  return params.toString();
}

async function start() {
  setState("connecting");
  let demo;
  try {
    const response = await fetch("/api/demo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
      cache: "no-store",
    });
    demo = await response.json();
    if (!response.ok) throw new Error(demo.error ?? `HTTP ${response.status}`);
  } catch (error) {
    setState("offline");
    say(`The demo could not start: ${error.message}`, "error");
    return;
  }
  const first = demo.orders[0];
  $("[data-demo-screen]").src = `/screen#${fragment(demo.screen)}`;
  $("[data-demo-controller]").src =
    `/controller#${fragment(demo.controller, first ? { scan: first } : {})}`;
  const orders = $("[data-demo-orders]");
  orders.textContent = demo.orders.length
    ? demo.orders.join(", ")
    : "(DOCUMENTS_DIR holds no document for the default template)";
  setState("connected");
}

start();
