// /operator (role admin), for now the approval of pairing codes: the code a device shows and
// the screen it becomes (SPEC 10; the full operator page is issue 16's).
import { $, Link, RefreshRejected, Session, pair, renewTokens, say } from "./common.js";

const session = new Session("operator", "admin");
const form = $("[data-approve-form]");
let link = null;

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
  } catch (error) {
    if (error instanceof RefreshRejected) link?.signOut(error.message);
    else say(`Not approved: ${error.message}`, "error");
  }
});

async function start() {
  session.takeFragment();
  if (!session.tokens) await pair(session);
  connect();
}

function connect() {
  $("[data-operator-name]").textContent = session.claims?.userId ?? "";
  form.hidden = false;
  link = new Link(session, {
    onSignedOut: async (reason) => {
      form.hidden = true;
      say(`Signed out (${reason}). Pair this page again, or open a link from rdisplay token issue --role admin --url.`, "error");
      await pair(session);
      connect();
    },
  });
  link.start();
}

start();
