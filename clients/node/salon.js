'use strict';
/**
 * A small Salon client for Node.js: loads the API from protos/salon/v1 at run time (no generated code),
 * streams a turn's events, resumes a dropped stream, and explains errors.
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
 * Stream one turn, calling onEvent(event) for each event once, in order, and resolve with the terminal event.
 *
 * request is a SendTurnRequest and must carry an idempotency_key (it names the turn). If the stream fails with
 * UNAVAILABLE, the turn is called again after a jittered backoff: SendTurn with the same key if no event was
 * seen (the engine never runs a turn twice), ResumeTurn after the last seen sequence number otherwise.
 *
 * @returns {{done: Promise<object>, cancel: () => Promise<void>}}
 */
function streamTurn(client, request, onEvent, { timeoutS = 300, maxRetries = 5 } = {}) {
  const deadline = Date.now() + timeoutS * 1000;
  let lastSeq = 0;
  let call = null;
  let stopped = false;

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
        return await attempt();
      } catch (err) {
        if (stopped || err.gap || err.code !== grpc.status.UNAVAILABLE) throw err;
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

  const cancel = async () => {
    await unary(client, 'CancelTurn', { session_id: request.session_id, turn_id: request.idempotency_key });
  };
  const close = () => {
    stopped = true;
    if (call) call.cancel();
  };
  return { done, cancel, close };
}

module.exports = {
  DEFAULT_PROTOS,
  TERMINAL,
  connect,
  describeError,
  formatError,
  loadService,
  statusName,
  streamTurn,
  unary,
};
