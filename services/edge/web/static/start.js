// /: what is running, the pages, and in development the one-click demo (SPEC 10).
import { $, setState } from "./common.js";

async function status() {
  try {
    const response = await fetch("/health", { cache: "no-store" });
    const health = await response.json();
    $("[data-health]").textContent =
      health.status === "ok"
        ? `running · store ${health.redis} · ${health.connections} connected here`
        : "running, but the store is unreachable";
    $("[data-health]").dataset.tone = health.status === "ok" ? "ok" : "error";
    const streams = health.streams ?? {};
    $("[data-streams]").textContent =
      `lag ${streams.lag ?? "–"} · pending ${streams.pending ?? "–"} · dead letter ${streams.deadLetter ?? "–"}`;
    setState("connected");
  } catch {
    $("[data-health]").textContent = "the edge does not answer";
    $("[data-health]").dataset.tone = "error";
    setState("offline");
  }
}

status();
setInterval(status, 5000);
