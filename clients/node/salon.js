'use strict';
/**
 * A small Salon client for Node.js: loads the API from protos/salon/v1 at run time (no generated code),
 * streams a turn's events, resumes a dropped stream, explains errors, and answers tool calls and approvals
 * (SubmitToolResult / DecideApproval) as the turn streams.
 */

const path = require('node:path');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

/** The repository's protos/ folder, found relative to this file (clients/node/ → ../../protos). */
const DEFAULT_PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const SERVICE_PROTO = 'salon/v1/conversation_service.proto';
const TERMINAL = new Set(['completed', 'error', 'cancelled']);

/**
 * Load salon.v1.ConversationService from a protos directory (the one holding salon/v1/*.proto).
 * @param {string} protosDir
 * @returns {grpc.ServiceClientConstructor}
 */
function loadService(protosDir = DEFAULT_PROTOS) {
  const file = path.join(protosDir, SERVICE_PROTO);
  if (!fs.existsSync(file)) {
    throw new Error(`no ${SERVICE_PROTO} under ${protosDir} (point --protos at the repository's protos/ folder)`);
  }
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    includeDirs: [protosDir],
    keepCase: true, // field names as in the .proto: session_id, turn_id …
    longs: Number, // seq and token counts are uint64; they fit a double for any real turn
    enums: String,
    defaults: true,
    oneofs: true, // event.kind names the oneof member: 'accepted', 'delta', …
  });
  return grpc.loadPackageDefinition(definition).salon.v1.ConversationService;
}

/**
 * Load another salon.v1 service (KnowledgeService, AdminService) from its .proto file under protosDir.
 * @param {string} file for example 'salon/v1/knowledge_service.proto'
 * @param {string} name for example 'KnowledgeService'
 * @param {string} [protosDir]
 */
function loadOtherService(file, name, protosDir = DEFAULT_PROTOS) {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [protosDir],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).salon.v1[name];
}

/** A KnowledgeService client (documents, Search, SearchMemory) of the gateway at target, plaintext. */
function connectKnowledge(target, protosDir = DEFAULT_PROTOS) {
  const Service = loadOtherService('salon/v1/knowledge_service.proto', 'KnowledgeService', protosDir);
  return new Service(target, grpc.credentials.createInsecure());
}

/** An AdminService client (GetUsage, EraseUser) of the gateway at target, plaintext. */
function connectAdmin(target, protosDir = DEFAULT_PROTOS) {
  const Service = loadOtherService('salon/v1/admin_service.proto', 'AdminService', protosDir);
  return new Service(target, grpc.credentials.createInsecure());
}

/**
 * The remembered turns of one session (session_id) or one user (user_id) most relevant to text: a list of
 * { citation, text, session_id, turn_id, turn_index, turn_time }. Reads only.
 */
async function searchMemory(knowledge, { text, session_id = '', user_id = '', top_k = 0, min_score = 0 }, timeoutS = 10) {
  const response = await unary(knowledge, 'SearchMemory', { text, session_id, user_id, top_k, min_score }, timeoutS);
  return response.hits;
}

/** Erase a user's sessions and memories (the caller's tenant, or tenant_id with an admin key). */
function eraseUser(admin, { user_id, tenant_id = '' }, timeoutS = 30) {
  return unary(admin, 'EraseUser', { user_id, tenant_id }, timeoutS);
}

/**
 * A client of the gateway at target (host:port), plaintext.
 * @param {string} target
 * @param {string} [protosDir]
 */
function connect(target, protosDir = DEFAULT_PROTOS) {
  const Service = loadService(protosDir);
  return new Service(target, grpc.credentials.createInsecure());
}

/** The name of a gRPC status code (14 → 'UNAVAILABLE'). */
function statusName(code) {
  return grpc.status[code] || `code ${code}`;
}

/**
 * What a failed call says: status name, Salon's reason and retry hint from the trailing metadata, message.
 * @param {grpc.ServiceError} error
 */
function describeError(error) {
  const first = (key) => {
    const values = error && error.metadata ? error.metadata.get(key) : [];
    return values.length ? String(values[0]) : '';
  };
  const retryMs = first('salon-retry-after-ms');
  return {
    code: statusName(error.code),
    reason: first('salon-error-reason'),
    message: error.details || error.message || '',
    retryAfterMs: retryMs ? Number(retryMs) : null,
  };
}

/** One line for a person: "UNAVAILABLE (NATS_UNAVAILABLE): the bus is down; retry after 500 ms". */
function formatError(error) {
  const d = describeError(error);
  let line = d.code + (d.reason ? ` (${d.reason})` : '') + (d.message ? `: ${d.message}` : '');
  if (d.retryAfterMs !== null) line += `; retry after ${d.retryAfterMs} ms`;
  return line;
}

/** Promise wrapper of a unary call with a deadline. */
function unary(client, method, request, timeoutS = 10) {
  return new Promise((resolve, reject) => {
    client[method](request, new grpc.Metadata(), { deadline: Date.now() + timeoutS * 1000 }, (err, res) =>
      err ? reject(err) : resolve(res),
    );
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A salon.v1.Tool: what the model may call. inputSchema is a JSON Schema object (sent as JSON text); leave it
 * out for a tool without arguments (or an MCP tool, whose server lists its schema).
 */
function toolSpec({ name, description = '', inputSchema = null, requiresApproval = false, mcpServer = '' }) {
  return {
    name,
    description,
    input_schema_json: inputSchema ? JSON.stringify(inputSchema) : '',
    requires_approval: requiresApproval,
    mcp_server: mcpServer,
  };
}

/** What the model sees of a handler's return value: a string as is, nothing as '', anything else as JSON. */
function encodeResult(value) {
  if (typeof value === 'string') return value;
  if (value === undefined || value === null) return '';
  return JSON.stringify(value);
}

/**
 * Answer a tool call with its result or an error (exactly one of them). Resolves with true when the call
 * already had an answer (the engine keeps the first).
 */
async function submitToolResult(client, { session_id, turn_id, call_id, result, error }, timeoutS = 30) {
  if ((result === undefined) === (error === undefined)) throw new Error('give exactly one of result or error');
  const request = { session_id, turn_id, call_id };
  if (error !== undefined) request.error = String(error);
  else request.result = encodeResult(result);
  const response = await unary(client, 'SubmitToolResult', request, timeoutS);
  return Boolean(response.duplicate);
}

/** Approve or reject a call waiting for approval; resolves with true when it was already decided. */
async function decideApproval(client, { session_id, turn_id, call_id, approved, reason = '', approver = '' }, timeoutS = 30) {
  const verdict = approved ? 'APPROVAL_VERDICT_APPROVE' : 'APPROVAL_VERDICT_REJECT';
  const response = await unary(client, 'DecideApproval', { session_id, turn_id, call_id, verdict, reason, approver }, timeoutS);
  return Boolean(response.duplicate);
}

/**
 * The part of a turn that answers its tool calls: tools maps a tool name to an (async) function of the parsed
 * arguments and the tool_call event, whose return value is submitted as the result and whose thrown error's
 * message as an error; onApproval(event) decides an approval_required event, returning true/false or
 * { approved, reason, approver }. Calls and approvals it has no function for are left to the caller.
 * observe(event) is fed every event in order; failure is a promise rejected when an answer could not be sent
 * (a call no longer waiting, NOT_FOUND, is dropped quietly); close() stops observing.
 */
function toolAnswerer(client, { tools = {}, onApproval = null } = {}) {
  const calls = new Map();
  const answered = new Set();
  let closed = false;
  let fail;
  const failure = new Promise((_, reject) => {
    fail = reject;
  });
  failure.catch(() => {}); // read by whoever races it; never an unhandled rejection

  // An answer is sent again while the gateway is UNAVAILABLE (the engine counts a call's answer once).
  const withRetries = async (send, attempts = 5) => {
    for (let n = 1; ; n += 1) {
      try {
        return await send();
      } catch (err) {
        if (closed || err.code !== grpc.status.UNAVAILABLE || n >= attempts) throw err;
        await sleep(Math.max(describeError(err).retryAfterMs || 0, 100 * 2 ** (n - 1)));
      }
    }
  };
  const quietly = (promise) =>
    promise.catch((err) => {
      if (closed || err.code === grpc.status.NOT_FOUND) return;
      fail(Object.assign(err, { toolAnswer: true }));
    });

  const run = (event) => {
    const handler = Object.prototype.hasOwnProperty.call(tools, event.tool) ? tools[event.tool] : null;
    if (!handler || event.mcp_server || answered.has(event.call_id)) return;
    answered.add(event.call_id);
    const ids = { session_id: event.session_id, turn_id: event.turn_id, call_id: event.call_id };
    const outcome = (async () => {
      let args = {};
      try {
        args = event.arguments_json ? JSON.parse(event.arguments_json) : {};
      } catch {
        args = {};
      }
      try {
        return { result: encodeResult(await handler(args, event)) };
      } catch (err) {
        const message = err && err.message ? err.message : String(err);
        return { error: `${(err && err.name) || 'Error'}: ${message}` };
      }
    })();
    quietly(outcome.then((answer) => (closed ? false : withRetries(() => submitToolResult(client, { ...ids, ...answer })))));
  };

  const observe = (event) => {
    if (closed) return;
    if (event.kind === 'accepted' && event.accepted.replayed) {
      closed = true; // a finished turn's record: its calls were answered long ago
    } else if (event.kind === 'tool_call') {
      const call = { ...event.tool_call, session_id: event.session_id, turn_id: event.turn_id };
      calls.set(call.call_id, call);
      if (!call.requires_approval) run(call);
    } else if (event.kind === 'approval_required' && onApproval) {
      const request = { ...event.approval_required, session_id: event.session_id, turn_id: event.turn_id };
      quietly(
        (async () => {
          const decided = await onApproval(request);
          const decision = typeof decided === 'boolean' ? { approved: decided } : decided;
          await withRetries(() =>
            decideApproval(client, {
              session_id: request.session_id,
              turn_id: request.turn_id,
              call_id: request.call_id,
              approved: Boolean(decision.approved),
              reason: decision.reason || '',
              approver: decision.approver || '',
            }),
          );
        })(),
      );
    } else if (event.kind === 'approval_decided' && event.approval_decided.approved) {
      const call = calls.get(event.approval_decided.call_id);
      if (call) run(call);
    } else if (TERMINAL.has(event.kind)) {
      closed = true;
    }
  };
  return {
    observe,
    failure,
    close: () => {
      closed = true;
    },
  };
}

/**
 * Stream one turn, calling onEvent(event) for each event once, in order, and resolve with the terminal event.
 *
 * request is a SendTurnRequest and must carry an idempotency_key (it names the turn). If the stream fails with
 * UNAVAILABLE, the turn is called again after a jittered backoff: SendTurn with the same key if no event was
 * seen (the engine never runs a turn twice), ResumeTurn after the last seen sequence number otherwise.
 *
 * tools ({ name: async (args, event) => result }) answer the turn's tool calls and onApproval its approvals
 * as it streams (see toolAnswerer); done rejects if an answer could not be sent. The turn's own
 * submitToolResult / approve / reject answer by hand.
 *
 * @returns {{done: Promise<object>, cancel: () => Promise<void>, close: () => void,
 *   submitToolResult: (callId: string, answer: {result?: any, error?: string}) => Promise<boolean>,
 *   approve: (callId: string, reason?: string, approver?: string) => Promise<boolean>,
 *   reject: (callId: string, reason?: string, approver?: string) => Promise<boolean>}}
 */
function streamTurn(client, request, onEvent, { timeoutS = 300, maxRetries = 5, tools = {}, onApproval = null } = {}) {
  const deadline = Date.now() + timeoutS * 1000;
  let lastSeq = 0;
  let call = null;
  let stopped = false;
  const answerer = toolAnswerer(client, { tools, onApproval });

  const attempt = () =>
    new Promise((resolve, reject) => {
      let terminal = null;
      call =
        lastSeq === 0
          ? client.SendTurn(request, { deadline })
          : client.ResumeTurn(
              { session_id: request.session_id, turn_id: request.idempotency_key, after_seq: lastSeq },
              { deadline },
            );
      call.on('data', (response) => {
        const event = response.event;
        const seq = Number(event.seq);
        if (seq <= lastSeq) return; // seen before the stream was replaced
        if (seq !== lastSeq + 1) {
          call.cancel();
          reject(Object.assign(new Error(`event ${seq} arrived after event ${lastSeq}`), { gap: true }));
          return;
        }
        lastSeq = seq;
        answerer.observe(event);
        onEvent(event);
        if (TERMINAL.has(event.kind)) terminal = event;
      });
      call.on('error', (err) => (terminal ? resolve(terminal) : reject(err)));
      call.on('end', () => {
        if (terminal) resolve(terminal);
        else reject(Object.assign(new Error('the stream ended before the turn did'), { code: grpc.status.UNAVAILABLE }));
      });
    });

  const done = (async () => {
    let failures = 0;
    for (;;) {
      const seqBefore = lastSeq;
      try {
        return await Promise.race([attempt(), answerer.failure]);
      } catch (err) {
        if (err.toolAnswer && call) call.cancel(); // stop reading a turn that waits for an answer that failed
        if (stopped || err.gap || err.toolAnswer || err.code !== grpc.status.UNAVAILABLE) throw err;
        failures = lastSeq > seqBefore ? 1 : failures + 1; // progress resets the count
        if (failures > maxRetries) throw err;
        const step = Math.min(5000, 100 * 2 ** (failures - 1));
        const hint = describeError(err).retryAfterMs || 0;
        const wait = Math.max(hint, step / 2 + Math.random() * (step / 2));
        if (Date.now() + wait >= deadline) throw err;
        await sleep(wait);
      }
    }
  })();

  done.finally(() => answerer.close()).catch(() => {});

  const ids = { session_id: request.session_id, turn_id: request.idempotency_key };
  const cancel = async () => {
    await unary(client, 'CancelTurn', ids);
  };
  const close = () => {
    stopped = true;
    answerer.close();
    if (call) call.cancel();
  };
  const submit = (callId, answer) => submitToolResult(client, { ...ids, call_id: callId, ...answer });
  const approve = (callId, reason = '', approver = '') =>
    decideApproval(client, { ...ids, call_id: callId, approved: true, reason, approver });
  const reject = (callId, reason = '', approver = '') =>
    decideApproval(client, { ...ids, call_id: callId, approved: false, reason, approver });
  return { done, cancel, close, submitToolResult: submit, approve, reject };
}

module.exports = {
  DEFAULT_PROTOS,
  TERMINAL,
  connect,
  connectAdmin,
  connectKnowledge,
  decideApproval,
  describeError,
  encodeResult,
  eraseUser,
  formatError,
  loadService,
  searchMemory,
  statusName,
  streamTurn,
  submitToolResult,
  toolAnswerer,
  toolSpec,
  unary,
};
