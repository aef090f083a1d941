// Salon chat page: an example frontend for Salon's web bridge, to copy from. No build step, no dependencies.
//
// Part 1, SalonWebClient, is all a page needs to talk to the bridge: JSON calls, a turn's events as Server-Sent
// Events read with fetch (so the token travels in a header, never in a URL), and resuming a dropped stream from
// the last event seen (Last-Event-ID), so nothing is missed or shown twice. Part 2 is the page itself.
//
// The page gets its token in the URL's fragment (#token=…), which browsers never send to a server: `salon serve
// --web` prints such a link; in production the frontend's own backend mints the token (IssueSessionToken, with
// the tenant's API key, which never reaches the page) and hands it over. The token is kept in sessionStorage, so
// a reload keeps the conversation and closing the tab forgets it.

// ---------------------------------------------------------------------------------------------------------------
// Part 1: the client

const TERMINAL = new Set(["completed", "error", "cancelled"]);
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 4000;

/** An error answered by the bridge (or the engine behind it): HTTP status, Salon's reason, a message. */
export class SalonError extends Error {
  constructor(status, reason, message, retryable = false) {
    super(message);
    this.status = status;
    this.reason = reason;
    this.retryable = retryable;
  }

  static fromBody(body, status = 0) {
    const error = (body && body.error) || {};
    const code = error.code || status;
    const retryable = code === 429 || code === 503 || code === 504 || error.status === "UNAVAILABLE";
    return new SalonError(code, error.reason || "UNKNOWN", error.message || "the request failed", retryable);
  }

  static async fromResponse(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return SalonError.fromBody(body, response.status);
  }
}

/** The claims of a session token (they are signed, not secret: the page may read them; only a gateway verifies). */
export function tokenClaims(token) {
  const parts = String(token).split(".");
  if (parts.length !== 4 || parts[0] !== "sst1") return null;
  try {
    const json = atob(parts[2].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json);
    return {
      tenantId: claims.tid,
      sessionId: claims.sid,
      user: claims.sub,
      rights: new Set(claims.rts || []),
      expiresAt: new Date(claims.exp * 1000),
    };
  } catch {
    return null;
  }
}

/** A new idempotency key, which also names the turn ([A-Za-z0-9_-], works outside secure contexts too). */
export function newTurnId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The SSE messages of a response body, as {id, event, data}. */
async function* sseMessages(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { id: null, event: "", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          if (message.data.length) yield { id: message.id, event: message.event || "message", data: message.data.join("\n") };
          message = { id: null, event: "", data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") message.data.push(value);
          else if (field === "event") message.event = value;
          else if (field === "id") message.id = value;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    // Back online: try again at once rather than at the end of the wait.
    window.addEventListener("online", done, { once: true });
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
    function done() {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      resolve();
    }
  });
}

/** Talks to one Salon web bridge with one session token. */
export class SalonWebClient {
  constructor({ token, baseUrl = "" }) {
    this.token = token;
    this.baseUrl = baseUrl.replace(/\/$/, "");
  }

  get claims() {
    return tokenClaims(this.token);
  }

  async request(method, path, { body, headers = {}, signal } = {}) {
    const response = await fetch(this.baseUrl + path, {
      method,
      signal,
      cache: "no-store",
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return response;
  }

  async json(method, path, options) {
    const response = await this.request(method, path, options);
    if (!response.ok) throw await SalonError.fromResponse(response);
    return response.json();
  }

  /** A new session (needs a user token); answers {session, token, expireTime, …}: use the token from then on. */
  createSession(settings = {}) {
    return this.json("POST", "/v1/sessions", { body: settings });
  }

  history(sessionId, { pageSize = 50, pageToken = "" } = {}) {
    const query = new URLSearchParams({ pageSize: String(pageSize), pageToken });
    return this.json("GET", `/v1/sessions/${encodeURIComponent(sessionId)}/history?${query}`);
  }

  cancel(sessionId, turnId) {
    return this.json("POST", `/v1/sessions/${encodeURIComponent(sessionId)}/turns/${encodeURIComponent(turnId)}/cancel`);
  }

  decideApproval(sessionId, turnId, callId, approve, reason = "") {
    const verdict = approve ? "APPROVAL_VERDICT_APPROVE" : "APPROVAL_VERDICT_REJECT";
    const path = `/v1/sessions/${encodeURIComponent(sessionId)}/turns/${encodeURIComponent(turnId)}/approvals`;
    return this.json("POST", path, { body: { callId, verdict, reason } });
  }

  /**
   * Send a turn and yield its events, each once and in order, until its terminal event. A dropped connection is
   * resumed from the last event seen (Last-Event-ID); if the turn never reached the engine it is sent again under
   * the same idempotency key, which names the same turn. `onState` hears "streaming" and "reconnecting".
   */
  async *sendTurn(sessionId, text, { turnId = newTurnId(), signal, onState = () => {} } = {}) {
    const session = encodeURIComponent(sessionId);
    let lastSeq = 0;
    let delay = RETRY_FIRST_MS;
    for (;;) {
      let response;
      try {
        response = lastSeq === 0
          ? await this.request("POST", `/v1/sessions/${session}/turns`, {
            body: { text, idempotencyKey: turnId },
            headers: { accept: "text/event-stream" },
            signal,
          })
          : await this.request("GET", `/v1/sessions/${session}/turns/${encodeURIComponent(turnId)}/events`, {
            headers: { accept: "text/event-stream", "last-event-id": String(lastSeq) },
            signal,
          });
      } catch (error) {
        if (signal?.aborted) throw error;
        response = null; // the network: wait, then try again
      }
      if (response && response.status === 204) return; // nothing after lastSeq: the turn had ended
      if (response && !response.ok) {
        const error = await SalonError.fromResponse(response);
        if (!error.retryable) throw error;
      } else if (response) {
        onState("streaming");
        delay = RETRY_FIRST_MS;
        try {
          for await (const message of sseMessages(response.body)) {
            if (message.event === "stream_error") {
              const error = SalonError.fromBody(JSON.parse(message.data));
              if (!error.retryable) throw error;
              break;
            }
            const event = JSON.parse(message.data);
            const seq = Number(event.seq);
            if (seq <= lastSeq) continue; // seen already (a turn sent again replays from the start)
            if (seq !== lastSeq + 1) break; // a gap should never happen; resuming fills it
            lastSeq = seq;
            yield event;
            if (TERMINAL.has(eventKind(event))) return;
          }
        } catch (error) {
          if (error instanceof SalonError || signal?.aborted) throw error;
          // The connection dropped mid-stream: resume below.
        }
      }
      onState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }
}

const KINDS = [
  "accepted", "citations", "delta", "usage", "completed", "error", "cancelled", "guardrail",
  "toolCall", "approvalRequired", "approvalDecided", "toolResult",
];

/** Which kind of event this is (the field of TurnEvent's `kind` that is set). */
export function eventKind(event) {
  return KINDS.find((kind) => kind in event) || "unknown";
}

// ---------------------------------------------------------------------------------------------------------------
// Part 2: the page

const TOKEN_KEY = "salon.token";
const USER_TOKEN_KEY = "salon.userToken";

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  notice: $("notice"),
  log: $("log"),
  form: $("composer"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  newChat: $("new-chat"),
  template: $("turn-template"),
};

let client = null;
let sessionId = "";
let running = null; // {turnId, view} of the turn streaming now

function setConnection(state, text) {
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

function setComposer(enabled) {
  ui.message.disabled = !enabled;
  ui.send.disabled = !enabled || running !== null;
  ui.stop.disabled = running === null;
}

/** One turn on the page: the question, the answer as it streams (with citation links), sources, usage. */
class TurnView {
  constructor(text, index) {
    this.node = ui.template.content.firstElementChild.cloneNode(true);
    this.node.querySelector(".text").textContent = text;
    this.answer = this.node.querySelector(".answer");
    this.status = this.node.querySelector(".turn-status");
    this.sources = this.node.querySelector(".sources");
    this.sourceList = this.node.querySelector(".source-list");
    this.usage = this.node.querySelector(".usage");
    this.tools = this.node.querySelector(".tools");
    this.prefix = `source-${index}`;
    this.sources.setAttribute("aria-label", `Sources of answer ${index}`);
    this.citationCount = 0;
    this.pending = "";
    this.startedAt = performance.now();
    this.firstTokenMs = null;
    this.node.dataset.lastSeq = "0";
    ui.log.append(this.node);
  }

  set state(value) {
    this.node.dataset.state = value;
    this.answer.setAttribute("aria-busy", String(value === "streaming" || value === "sending" || value === "reconnecting"));
  }

  setCitations(citations) {
    this.citationCount = citations.length;
    this.sourceList.replaceChildren(...citations.map((c, i) => {
      const item = document.createElement("li");
      item.id = `${this.prefix}-${i + 1}`;
      item.append(c.title || c.documentId || "a passage");
      const meta = document.createElement("span");
      meta.className = "source-meta";
      const score = typeof c.score === "number" ? `, relevance ${c.score.toFixed(2)}` : "";
      meta.textContent = ` (${c.source === "memory" ? "earlier in this conversation" : "knowledge base"}${score})`;
      item.append(meta);
      return item;
    }));
    this.sources.hidden = citations.length === 0;
  }

  appendText(text) {
    if (this.firstTokenMs === null) this.firstTokenMs = performance.now() - this.startedAt;
    // Hold back a citation marker cut in two ("[1" now, "]" in the next delta) so it renders as one link; every
    // piece of text is added once, so a screen reader announces it once.
    this.pending += text;
    const partial = this.pending.match(/\[\d{0,3}$/);
    const ready = partial ? this.pending.slice(0, partial.index) : this.pending;
    this.pending = partial ? this.pending.slice(partial.index) : "";
    this.render(ready);
  }

  flush() {
    this.render(this.pending);
    this.pending = "";
  }

  render(text) {
    let last = 0;
    for (const match of text.matchAll(/\[(\d{1,3})\]/g)) {
      const n = Number(match[1]);
      if (n < 1 || n > this.citationCount) continue;
      if (match.index > last) this.answer.append(text.slice(last, match.index));
      const link = document.createElement("a");
      link.className = "cite";
      link.href = `#${this.prefix}-${n}`;
      link.textContent = `[${n}]`;
      link.setAttribute("aria-label", `source ${n}`);
      this.answer.append(link);
      last = match.index + match[0].length;
    }
    if (last < text.length) this.answer.append(text.slice(last));
  }

  setUsage(usage) {
    const parts = [
      `${Number(usage.inputTokens || 0)} tokens in`,
      `${Number(usage.outputTokens || 0)} out`,
    ];
    if (usage.estimatedCostUsd) parts.push(`$${Number(usage.estimatedCostUsd).toFixed(4)}`);
    if (usage.provider) {
      parts.push(usage.model && usage.model !== usage.provider ? `${usage.provider} · ${usage.model}` : usage.provider);
    }
    if (this.firstTokenMs !== null) parts.push(`first token ${Math.round(this.firstTokenMs)} ms`);
    this.usage.textContent = parts.join(" · ");
  }

  addTool(text, actions = []) {
    const item = document.createElement("p");
    item.className = "tool";
    item.append(text);
    for (const [label, onClick] of actions) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.addEventListener("click", () => {
        for (const b of item.querySelectorAll("button")) b.disabled = true;
        onClick();
      });
      item.append(" ", button);
    }
    this.tools.append(item);
    this.tools.hidden = false;
  }
}

function apply(view, event, turnId) {
  view.node.dataset.lastSeq = String(event.seq);
  switch (eventKind(event)) {
    case "accepted":
      view.node.dataset.turnId = event.turnId;
      if (event.accepted.queuePosition) view.status.textContent = `Queued behind ${event.accepted.queuePosition} turn(s)…`;
      break;
    case "citations":
      view.setCitations(event.citations.citations || []);
      break;
    case "delta":
      view.status.textContent = "";
      view.appendText(event.delta.text || "");
      break;
    case "usage":
      view.setUsage(event.usage);
      break;
    case "completed":
      view.flush();
      view.state = "completed";
      break;
    case "cancelled":
      view.flush();
      view.state = "cancelled";
      view.status.textContent = "Stopped.";
      break;
    case "error":
      view.flush();
      view.state = "error";
      view.status.textContent = `The turn failed: ${event.error.message} (${event.error.reason})`;
      break;
    case "guardrail":
      for (const d of event.guardrail.decisions || []) {
        if (d.action !== "flag") view.status.textContent = `Guardrail: ${d.action} (${d.reason})`;
      }
      break;
    case "toolCall": {
      const call = event.toolCall;
      const where = call.mcpServer ? `on ${call.mcpServer}` : "by the application";
      if (!call.requiresApproval) view.addTool(`Calling ${call.tool} ${where}…`);
      break;
    }
    case "approvalRequired": {
      const call = event.approvalRequired;
      const actions = client.claims?.rights.has("approve")
        ? [
          ["Approve", () => decide(turnId, call.callId, true, view)],
          ["Reject", () => decide(turnId, call.callId, false, view)],
        ]
        : [];
      view.addTool(`${call.tool} wants to run with ${call.argumentsJson}. Approve?`, actions);
      break;
    }
    case "approvalDecided":
      view.addTool(`${event.approvalDecided.approved ? "Approved" : "Rejected"}.`);
      break;
    case "toolResult": {
      const result = event.toolResult;
      view.addTool(`${result.tool} ${result.isError ? "failed" : "answered"}.`);
      break;
    }
    default:
      break;
  }
}

async function decide(turnId, callId, approve, view) {
  try {
    await client.decideApproval(sessionId, turnId, callId, approve);
  } catch (error) {
    view.status.textContent = `The decision was not taken: ${error.message}`;
  }
}

async function send(text) {
  const view = new TurnView(text, ui.log.children.length + 1);
  const turnId = newTurnId();
  view.node.dataset.turnId = turnId;
  running = { turnId, view };
  setComposer(true);
  view.state = "sending";
  view.node.scrollIntoView({ block: "end" });
  try {
    for await (const event of client.sendTurn(sessionId, text, {
      turnId,
      onState: (state) => {
        view.state = state === "reconnecting" ? "reconnecting" : "streaming";
        if (state === "reconnecting") {
          view.status.textContent = "Connection lost; resuming…";
          setConnection("reconnecting", navigator.onLine ? "Reconnecting…" : "Offline");
        } else {
          if (view.status.textContent.startsWith("Connection lost")) view.status.textContent = "";
          setConnection("connected", "Connected");
        }
      },
    })) {
      apply(view, event, turnId);
      view.node.scrollIntoView({ block: "end" });
    }
  } catch (error) {
    view.flush();
    view.state = "error";
    view.status.textContent = describe(error);
    if (error.reason === "TOKEN_EXPIRED") expired();
  } finally {
    running = null;
    setComposer(!ui.message.dataset.locked);
    ui.message.focus();
  }
}

function describe(error) {
  return error instanceof SalonError ? `${error.message} (${error.reason})` : "The request failed.";
}

function expired() {
  ui.message.dataset.locked = "1";
  setComposer(false);
  showNotice("This page's session token has expired. Open a new link (your app's backend mints one).");
  sessionStorage.removeItem(TOKEN_KEY);
}

async function stop() {
  if (!running) return;
  ui.stop.disabled = true;
  try {
    await client.cancel(sessionId, running.turnId);
  } catch (error) {
    if (running) {
      running.view.status.textContent = `Stopping failed: ${describe(error)}`;
      ui.stop.disabled = false;
    }
  }
}

function showHistory(turns) {
  for (const record of turns) {
    const view = new TurnView(record.userText || "", ui.log.children.length + 1);
    view.node.dataset.turnId = record.turnId;
    const citations = (record.context && record.context.passages) || [];
    view.setCitations(citations.map((p) => p.citation || p));
    view.appendText(record.replyText || "");
    view.flush();
    view.firstTokenMs = null; // not measured: the turn ran before this page
    if (record.usage) view.setUsage(record.usage);
    const status = record.status || "TURN_STATUS_COMPLETED";
    view.state = status === "TURN_STATUS_CANCELLED" ? "cancelled" : status === "TURN_STATUS_FAILED" ? "error" : "completed";
    if (status === "TURN_STATUS_CANCELLED") view.status.textContent = "Stopped.";
  }
}

async function loadHistory() {
  if (!client.claims?.rights.has("read")) return;
  let pageToken = "";
  do {
    const page = await client.history(sessionId, { pageToken });
    showHistory(page.turns || []);
    pageToken = page.nextPageToken || "";
  } while (pageToken);
}

async function openSession() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const linked = fragment.get("token");
  if (linked) {
    // Out of the address bar (and so out of bookmarks and screenshots) at once.
    history.replaceState(null, "", location.pathname + location.search);
    const claims = tokenClaims(linked);
    sessionStorage.setItem(claims && !claims.sessionId ? USER_TOKEN_KEY : TOKEN_KEY, linked);
    if (claims && !claims.sessionId) sessionStorage.removeItem(TOKEN_KEY);
  }
  const userToken = sessionStorage.getItem(USER_TOKEN_KEY);
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (!token && userToken) {
    const created = await new SalonWebClient({ token: userToken }).createSession();
    token = created.token;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  ui.newChat.hidden = !userToken;
  const claims = token && tokenClaims(token);
  if (!claims || !claims.sessionId) {
    throw new SalonError(401, "TOKEN_REQUIRED",
      "This page needs a session token: open the link `salon serve --web` prints, or one your app's backend makes.");
  }
  client = new SalonWebClient({ token });
  sessionId = claims.sessionId;
  if (claims.expiresAt <= new Date()) throw new SalonError(401, "TOKEN_EXPIRED", "This page's session token has expired.");
}

async function main() {
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.message.value.trim();
    if (!text || running) return;
    ui.message.value = "";
    send(text);
  });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    } else if (event.key === "Escape" && running) {
      event.preventDefault();
      stop();
    }
  });
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  window.addEventListener("offline", () => setConnection("offline", "Offline"));
  window.addEventListener("online", () => setConnection("connected", running ? "Reconnecting…" : "Online"));

  try {
    await openSession();
    await loadHistory();
  } catch (error) {
    setConnection("error", "Not connected");
    showNotice(describe(error));
    if (error.reason === "TOKEN_EXPIRED") expired();
    return;
  }
  setConnection("connected", "Connected");
  setComposer(true);
  ui.message.focus();
}

main();
