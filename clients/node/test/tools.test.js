'use strict';
/**
 * The Node client answering tool calls and approvals, against a fake gRPC client object (no sockets): run with
 * `node --test` in clients/node (the Python suite runs it too).
 */

const test = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const grpc = require('@grpc/grpc-js');
const { streamTurn, toolAnswerer, toolSpec, encodeResult } = require('../salon');

const IDS = { session_id: 's1', turn_id: 'k1' };

/** A fake ConversationService client: SendTurn returns a call the test feeds; unary calls are recorded. */
function fakeClient({ failSubmit = null } = {}) {
  const client = {
    submits: [],
    decisions: [],
    call: null,
    SendTurn() {
      const call = new EventEmitter();
      call.cancelled = false;
      call.cancel = () => {
        call.cancelled = true;
      };
      client.call = call;
      return call;
    },
    SubmitToolResult(request, metadata, options, callback) {
      client.submits.push(request);
      if (failSubmit) {
        const err = Object.assign(new Error(failSubmit.message), { code: failSubmit.code, metadata: new grpc.Metadata() });
        setImmediate(() => callback(err));
        return;
      }
      setImmediate(() => callback(null, { duplicate: false }));
    },
    DecideApproval(request, metadata, options, callback) {
      client.decisions.push(request);
      setImmediate(() => callback(null, { duplicate: false, verdict: request.verdict }));
    },
  };
  return client;
}

let seq = 0;
function event(kind, body) {
  seq += 1;
  return { ...IDS, seq, kind, [kind]: body };
}

const until = async (predicate) => {
  for (let i = 0; i < 500 && !predicate(); i += 1) await new Promise((r) => setTimeout(r, 2));
  assert.ok(predicate(), 'condition not reached');
};

test('a tool call runs its handler and the result (or the thrown error) is submitted', async () => {
  const client = fakeClient();
  const answerer = toolAnswerer(client, {
    tools: {
      add: ({ a, b }) => a + b,
      lookup: async ({ id }) => {
        throw new RangeError(`no order ${id}`);
      },
    },
  });
  answerer.observe(event('tool_call', { call_id: 'c1', tool: 'add', arguments_json: '{"a":2,"b":3}' }));
  answerer.observe(event('tool_call', { call_id: 'c2', tool: 'lookup', arguments_json: '{"id":"A-1"}' }));
  answerer.observe(event('tool_call', { call_id: 'c3', tool: 'elsewhere', arguments_json: '{}' }));
  answerer.observe(event('tool_call', { call_id: 'c4', tool: 'add', arguments_json: '{}', mcp_server: 'srv' }));
  await until(() => client.submits.length === 2);
  const byCall = Object.fromEntries(client.submits.map((s) => [s.call_id, s]));
  assert.deepEqual(byCall.c1, { ...IDS, call_id: 'c1', result: '5' });
  assert.deepEqual(byCall.c2, { ...IDS, call_id: 'c2', error: 'RangeError: no order A-1' });
});

test('an approval goes to onApproval, and an approved client call then runs', async () => {
  const client = fakeClient();
  const seen = [];
  const answerer = toolAnswerer(client, {
    tools: { refund: ({ amount }) => `refunded ${amount}` },
    onApproval: async (request) => {
      seen.push(request);
      return { approved: request.call_id === 'c1', reason: 'policy', approver: 'bot' };
    },
  });
  for (const id of ['c1', 'c2']) {
    answerer.observe(event('tool_call', { call_id: id, tool: 'refund', arguments_json: '{"amount":5}', requires_approval: true }));
    answerer.observe(event('approval_required', { call_id: id, tool: 'refund', arguments_json: '{"amount":5}' }));
  }
  await until(() => client.decisions.length === 2);
  assert.equal(client.submits.length, 0); // nothing runs before its approval
  const verdicts = Object.fromEntries(client.decisions.map((d) => [d.call_id, d.verdict]));
  assert.deepEqual(verdicts, { c1: 'APPROVAL_VERDICT_APPROVE', c2: 'APPROVAL_VERDICT_REJECT' });
  assert.equal(client.decisions[0].approver, 'bot');
  answerer.observe(event('approval_decided', { call_id: 'c1', approved: true }));
  answerer.observe(event('approval_decided', { call_id: 'c2', approved: false }));
  await until(() => client.submits.length === 1);
  assert.equal(client.submits[0].result, 'refunded 5');
  assert.equal(seen[0].session_id, 's1');
});

test('streamTurn answers calls as it streams and fails when an answer is refused', async () => {
  const client = fakeClient({ failSubmit: { code: grpc.status.PERMISSION_DENIED, message: 'no' } });
  const request = { ...IDS, text: 'hi', idempotency_key: 'k1' };
  const turn = streamTurn(client, request, () => {}, { tools: { add: ({ a, b }) => a + b } });
  client.call.emit('data', { event: { ...IDS, seq: 1, kind: 'accepted', accepted: { replayed: false } } });
  client.call.emit('data', { event: { ...IDS, seq: 2, kind: 'tool_call', tool_call: { call_id: 'c1', tool: 'add', arguments_json: '{"a":1,"b":1}' } } });
  await assert.rejects(turn.done, (err) => err.code === grpc.status.PERMISSION_DENIED);
  assert.ok(client.call.cancelled, 'the stream of a turn that cannot be answered is stopped');
});

test('a call no longer waiting is dropped and the turn ends normally', async () => {
  const client = fakeClient({ failSubmit: { code: grpc.status.NOT_FOUND, message: 'gone' } });
  const request = { ...IDS, text: 'hi', idempotency_key: 'k1' };
  const turn = streamTurn(client, request, () => {}, { tools: { add: () => 2 } });
  client.call.emit('data', { event: { ...IDS, seq: 1, kind: 'accepted', accepted: {} } });
  client.call.emit('data', { event: { ...IDS, seq: 2, kind: 'tool_call', tool_call: { call_id: 'c1', tool: 'add', arguments_json: '{}' } } });
  await until(() => client.submits.length === 1);
  client.call.emit('data', { event: { ...IDS, seq: 3, kind: 'error', error: { reason: 'TOOL_WAIT_TIMEOUT' } } });
  client.call.emit('end');
  const end = await turn.done;
  assert.equal(end.kind, 'error');
});

test('a replayed turn answers nothing again; helpers build messages', async () => {
  const client = fakeClient();
  const answerer = toolAnswerer(client, { tools: { add: () => 1 } });
  answerer.observe(event('accepted', { replayed: true }));
  answerer.observe(event('tool_call', { call_id: 'c1', tool: 'add', arguments_json: '{}' }));
  await new Promise((r) => setImmediate(r));
  assert.equal(client.submits.length, 0);
  assert.deepEqual(toolSpec({ name: 'add', inputSchema: { type: 'object' }, requiresApproval: true }), {
    name: 'add',
    description: '',
    input_schema_json: '{"type":"object"}',
    requires_approval: true,
    mcp_server: '',
  });
  assert.equal(encodeResult({ a: 1 }), '{"a":1}');
  assert.equal(encodeResult(undefined), '');
  assert.equal(encodeResult('text'), 'text');
});
