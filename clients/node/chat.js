#!/usr/bin/env node
'use strict';
/**
 * salon-chat-node: open a Salon session (or reuse one), send one turn, print the answer as it streams, and
 * answer the turn's tool calls and approvals (from options, or by asking on standard input).
 *
 *   node chat.js --target 127.0.0.1:50051 --text "Hello!"
 */

const fs = require('node:fs');
const readline = require('node:readline');
const { randomUUID } = require('node:crypto');
const { parseArgs } = require('node:util');
const { DEFAULT_PROTOS, connect, formatError, streamTurn, toolSpec, unary } = require('./salon');

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
  --tools FILE         JSON array of tools the new session offers: {name, description, input_schema,
                       requires_approval, mcp_server}
  --mcp-server NAME    offer every tool of this configured MCP server to the new session (repeatable)
  --tool-result TEXT   answer every tool call the client runs with this result
  --tool-error TEXT    answer every tool call the client runs with this error
  --approve            approve every call that waits for approval
  --reject REASON      reject every call that waits for approval, with this reason
  --approver NAME      who decides, as recorded with the decision (default salon-chat-node)
  -h, --help           show this help

Tool calls and their results are reported on standard error as they happen. Without --tool-result or
--tool-error a call the client runs asks for its result on standard input (an empty line refuses it);
without --approve or --reject an approval asks "approve? [y/N]" and then for a reason.

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
      tools: { type: 'string', default: '' },
      'mcp-server': { type: 'string', multiple: true, default: [] },
      'tool-result': { type: 'string' },
      'tool-error': { type: 'string' },
      approve: { type: 'boolean', default: false },
      reject: { type: 'string' },
      approver: { type: 'string', default: 'salon-chat-node' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new Error('--timeout must be a positive number of seconds');
  if (!values.text) throw new Error('--text must not be empty');
  if (values['tool-result'] !== undefined && values['tool-error'] !== undefined) {
    throw new Error('give at most one of --tool-result and --tool-error');
  }
  if (values.approve && values.reject !== undefined) throw new Error('give at most one of --approve and --reject');
  const tools = values.tools ? readTools(values.tools) : [];
  return { ...values, timeout, tools };
}

/** The tools of --tools FILE as salon.v1.Tool messages. */
function readTools(file) {
  let listed;
  try {
    listed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`--tools: cannot read a JSON array of tools from ${file} (${err.message})`);
  }
  if (!Array.isArray(listed)) throw new Error('--tools: the file must hold a JSON array of tools');
  return listed.map((t) =>
    toolSpec({
      name: t.name,
      description: t.description || '',
      inputSchema: t.input_schema || null,
      requiresApproval: Boolean(t.requires_approval),
      mcpServer: t.mcp_server || '',
    }),
  );
}

/** Questions to the person at the terminal: one at a time, answers read line by line from standard input. */
function asker() {
  let lines = null;
  let chain = Promise.resolve();
  const nextLine = async (prompt) => {
    if (!lines) lines = readline.createInterface({ input: process.stdin, terminal: false })[Symbol.asyncIterator]();
    process.stderr.write(prompt);
    const { value, done } = await lines.next();
    return done ? null : value;
  };
  return {
    // Questions are serialised so that two calls of one round never interleave their prompts.
    ask: (prompt) => {
      const answer = chain.then(() => nextLine(prompt));
      chain = answer.catch(() => null);
      return answer;
    },
    close: () => {
      if (lines) lines.return();
      process.stdin.destroy();
    },
  };
}

const preview = (text, limit = 200) => {
  const flat = String(text).replace(/\s+/g, ' ').trim();
  return flat.length <= limit ? flat : `${flat.slice(0, limit - 1)}…`;
};

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
  const terminal = asker();
  try {
    let sessionId = options.session;
    if (!sessionId) {
      const offered = options.tools.length || options['mcp-server'].length;
      const created = await unary(client, 'CreateSession', {
        system_prompt: options.system,
        ...(offered ? { tools: { tools: options.tools, mcp_servers: options['mcp-server'] } } : {}),
      });
      sessionId = created.session.session_id;
    }
    process.stderr.write(`session ${sessionId} on ${options.target}\n`);

    step = 'SendTurn';
    const request = { session_id: sessionId, text: options.text, idempotency_key: randomUUID() };
    let usage = null;
    let answerFailed = null;
    const calls = new Map();
    const later = (work) =>
      work().catch((err) => {
        answerFailed = err;
        process.stderr.write(`[answering a tool call failed: ${err.code === undefined ? err.message : formatError(err)}]\n`);
        turn.cancel().catch(() => {});
      });
    const answerCall = (call) =>
      later(async () => {
        let answer;
        if (options['tool-result'] !== undefined) answer = { result: options['tool-result'] };
        else if (options['tool-error'] !== undefined) answer = { error: options['tool-error'] };
        else {
          const typed = await terminal.ask(`result of ${call.tool}> `);
          answer = typed && typed.trim() ? { result: typed.trim() } : { error: 'nobody at the terminal could run this tool' };
        }
        await turn.submitToolResult(call.call_id, answer);
      });
    const decide = (approval) =>
      later(async () => {
        if (options.approve) return turn.approve(approval.call_id, '', options.approver);
        if (options.reject !== undefined) return turn.reject(approval.call_id, options.reject, options.approver);
        const yes = await terminal.ask(`approve ${approval.tool} ${preview(approval.arguments_json)}? [y/N] `);
        if (yes !== null && /^(y|yes)$/i.test(yes.trim())) return turn.approve(approval.call_id, '', options.approver);
        const reason = yes === null ? null : await terminal.ask('reason (the model sees it)> ');
        return turn.reject(approval.call_id, (reason || '').trim() || 'rejected at the terminal', options.approver);
      });
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
        if (event.kind === 'tool_call') {
          const call = event.tool_call;
          calls.set(call.call_id, call);
          const where = call.mcp_server ? ` on ${call.mcp_server}` : '';
          process.stderr.write(`[tool call ${call.tool}${where} ${preview(call.arguments_json)}]\n`);
          if (!call.mcp_server && !call.requires_approval) answerCall(call);
        } else if (event.kind === 'approval_required') {
          decide(event.approval_required);
        } else if (event.kind === 'approval_decided') {
          const d = event.approval_decided;
          const by = d.approver ? ` by ${d.approver}` : '';
          process.stderr.write(`[${d.approved ? 'approved' : 'rejected'}${by}${d.reason ? `: ${d.reason}` : ''}]\n`);
          const call = calls.get(d.call_id);
          if (d.approved && call && !call.mcp_server) answerCall(call);
        } else if (event.kind === 'tool_result') {
          const r = event.tool_result;
          const source = String(r.source).replace(/^TOOL_RESULT_SOURCE_/, '').toLowerCase();
          const label = r.is_error ? 'error' : 'result';
          process.stderr.write(`[${label} of ${r.tool} (${source}): ${preview(r.content_preview)}]\n`);
        }
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
    return end.kind === 'completed' && !answerFailed ? 0 : 1;
  } catch (err) {
    const what = err.code === undefined ? err.message : formatError(err);
    process.stderr.write(`\nsalon-chat-node: ${step} failed: ${what}\n`);
    return 1;
  } finally {
    terminal.close();
    client.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { main, parse, readTools, USAGE };
