#!/usr/bin/env node
'use strict';
/**
 * salon-chat-node: open a Salon session (or reuse one), send one turn, print the answer as it streams.
 *
 *   node chat.js --target 127.0.0.1:50051 --text "Hello!"
 */

const { randomUUID } = require('node:crypto');
const { parseArgs } = require('node:util');
const { DEFAULT_PROTOS, connect, formatError, streamTurn, unary } = require('./salon');

const USAGE = `Usage: node chat.js [options]

Open a session on a Salon gateway, send one turn and print the answer token by token as it streams.

Options:
  --target HOST:PORT   gateway address (default 127.0.0.1:50051)
  --text TEXT          the message to send (default "Hello!")
  --session ID         send to this existing session instead of creating one
  --system PROMPT      system prompt of the new session
  --protos DIR         folder holding salon/v1/*.proto (default: the repository's protos/,
                       ${DEFAULT_PROTOS})
  --timeout SECONDS    deadline of the whole turn (default 300)
  --events             print every event as one JSON line instead of the answer text
  -h, --help           show this help

The answer goes to standard output; the session id and how the turn ended go to standard error.
Exit status: 0 the turn completed, 1 it failed, was cancelled or a call failed, 2 bad usage.
Ctrl-C once cancels the turn on the server (CancelTurn); twice quits.`;

function parse(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      target: { type: 'string', default: '127.0.0.1:50051' },
      text: { type: 'string', default: 'Hello!' },
      session: { type: 'string', default: '' },
      system: { type: 'string', default: '' },
      protos: { type: 'string', default: DEFAULT_PROTOS },
      timeout: { type: 'string', default: '300' },
      events: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new Error('--timeout must be a positive number of seconds');
  if (!values.text) throw new Error('--text must not be empty');
  return { ...values, timeout };
}

function describeEnd(event) {
  if (event.kind === 'completed') return `completed (${String(event.completed.stop_reason).replace(/^STOP_REASON_/, '').toLowerCase()})`;
  if (event.kind === 'error') {
    const e = event.error;
    return `failed: ${e.message} (${e.reason}${e.retryable ? ', retryable' : ''})`;
  }
  return `cancelled${event.cancelled.reason ? ` (${event.cancelled.reason})` : ''}`;
}

async function main(argv) {
  let options;
  try {
    options = parse(argv);
  } catch (err) {
    process.stderr.write(`salon-chat-node: ${err.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }

  let client;
  try {
    client = connect(options.target, options.protos);
  } catch (err) {
    process.stderr.write(`salon-chat-node: ${err.message}\n`);
    return 2;
  }

  let step = 'CreateSession';
  try {
    let sessionId = options.session;
    if (!sessionId) {
      const created = await unary(client, 'CreateSession', { system_prompt: options.system });
      sessionId = created.session.session_id;
    }
    process.stderr.write(`session ${sessionId} on ${options.target}\n`);

    step = 'SendTurn';
    const request = { session_id: sessionId, text: options.text, idempotency_key: randomUUID() };
    let usage = null;
    const turn = streamTurn(
      client,
      request,
      (event) => {
        if (options.events) {
          process.stdout.write(`${JSON.stringify(event)}\n`);
        } else if (event.kind === 'delta') {
          process.stdout.write(event.delta.text);
        }
        if (event.kind === 'usage') usage = event.usage;
      },
      { timeoutS: options.timeout },
    );

    let interrupts = 0;
    process.on('SIGINT', () => {
      interrupts += 1;
      if (interrupts > 1) {
        turn.close();
        process.exit(130);
      }
      process.stderr.write('\n[cancelling the turn; Ctrl-C again to quit]\n');
      turn.cancel().catch((err) => process.stderr.write(`[cancel failed: ${formatError(err)}]\n`));
    });

    const end = await turn.done;
    if (!options.events) process.stdout.write('\n');
    const tokens = usage ? `, ${usage.output_tokens} output tokens` : '';
    process.stderr.write(`[turn ${request.idempotency_key} ${describeEnd(end)}${tokens}]\n`);
    return end.kind === 'completed' ? 0 : 1;
  } catch (err) {
    const what = err.code === undefined ? err.message : formatError(err);
    process.stderr.write(`\nsalon-chat-node: ${step} failed: ${what}\n`);
    return 1;
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { main, parse, USAGE };
