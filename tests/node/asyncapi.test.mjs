// The bank's GET /asyncapi.json read by @asyncapi/parser, the AsyncAPI
// initiative's own parser and validator: no diagnostic of severity error,
// every published type a message on both channels, and every event the feed
// serves after real traffic valid against its message's payload schema
// (Ajv, draft-07, the dialect of AsyncAPI 3.0 schemas).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { DiagnosticSeverity, Parser } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

import { BankClient, dropDatabase, prepareDatabase, startBank } from './lib/bank.mjs';
import { bankTraffic } from './lib/traffic.mjs';

const kPublished = [
  'bank.account.opened.v1', 'bank.account.deposited.v1', 'bank.account.withdrawn.v1',
  'bank.account.closed.v1', 'bank.account.transfer_debited.v1',
  'bank.account.transfer_credited.v1', 'bank.account.transfer_refunded.v1',
  'bank.transfer.requested.v1', 'bank.transfer.completed.v1', 'bank.transfer.failed.v1',
];

let db;
let bank;
before(async () => {
  db = await prepareDatabase();
  bank = await startBank(db);
});
after(async () => {
  if (bank) await bank.stop();
  if (db) await dropDatabase(db);
});

async function fetchDocument() {
  // Open: no token.
  const response = await fetch(`${bank.url}/asyncapi.json`);
  assert.equal(response.status, 200);
  return response.text();
}

test('@asyncapi/parser validates /asyncapi.json without errors', async () => {
  const text = await fetchDocument();
  const { document, diagnostics } = await new Parser().parse(text);
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  assert.deepEqual(errors.map((d) => `${d.path.join('.')}: ${d.message}`), []);
  assert.ok(document, 'the parser returned no document');
  for (const d of diagnostics) {
    console.log(`# diagnostic (severity ${d.severity}) ${d.path.join('.')}: ${d.message}`);
  }

  assert.equal(document.version(), '3.0.0');
  assert.equal(document.info().title(), 'bank');
  const messages = document.components().messages().all().map((m) => m.id()).sort();
  assert.deepEqual(messages, [...kPublished].sort());
  for (const address of ['/events', '/events/stream']) {
    const channel = document.channels().all().find((c) => c.address() === address);
    assert.ok(channel, `no channel ${address}`);
    assert.deepEqual(channel.messages().all().map((m) => m.id()).sort(), [...kPublished].sort());
    const operations = channel.operations().all();
    assert.equal(operations.length, 1);
    assert.ok(operations[0].isReceive());
  }
  const deposited = document.components().messages().get('bank.account.deposited.v1');
  const data = deposited.payload().properties().data;
  assert.deepEqual(data.required(), ['amount']);
  assert.equal(data.properties().amount.type(), 'integer');
  assert.equal(data.properties().amount.minimum(), 1);
  assert.equal(data.properties().amount.maximum(), 1e15);
});

test('every event GET /events serves matches its message in /asyncapi.json', async () => {
  const spec = JSON.parse(await fetchDocument());
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  const validators = new Map(Object.entries(spec.components.messages)
      .map(([type, message]) => [type, ajv.compile(message.payload)]));

  const client = new BankClient(bank.url, db.token);
  const traffic = await bankTraffic(client, 'schema');
  const settled = new Set(Object.keys(traffic.transfers));
  const { events } = await client.followEvents((all) => {
    const done = all.filter((e) => e.type === 'bank.transfer.completed.v1' ||
                                   e.type === 'bank.transfer.failed.v1');
    return done.filter((e) => settled.has(e.subject)).length === settled.size;
  });
  const seen = new Set();
  for (const event of events) {
    const validate = validators.get(event.type);
    assert.ok(validate, `event type ${event.type} is not in /asyncapi.json`);
    assert.ok(validate(event), `${event.type} ${event.id}: ${ajv.errorsText(validate.errors)}`);
    seen.add(event.type);
  }
  assert.deepEqual([...seen].sort(), [...kPublished].sort());
});
